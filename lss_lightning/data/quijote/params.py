"""Cosmological parameters and seeds of Quijote simulations.

Latin-hypercube sets keep a table ``latin_hypercube_params.txt``: row i = simulation folder i, columns
    LH:   Omega_m Omega_b h n_s sigma_8
    nwLH: Omega_m Omega_b h n_s sigma_8 M_nu w      (M_nu in eV; w is the constant equation of state, w0)
with an optional ``#`` header line naming the columns (used when present; aliases such as Om, s8, w
are understood). Fiducial sets (``fiducial``, ``fiducial_HR``, ...) use Quijote's fiducial cosmology;
any other set needs its parameters given explicitly. Seeds are read from ``ICs/2LPT.param`` or
``ICs/NGenIC.param`` (line ``Seed <int>``) when the ICs folder is present, else -1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lss_lightning.cosmology import PARAMETER_ALIASES, PARAMETER_NAMES, Cosmology
from lss_lightning.data.quijote.errors import QuijoteError
from lss_lightning.data.quijote.layout import QuijoteLayout

LH_COLUMNS = ("Omega_m", "Omega_b", "h", "n_s", "sigma_8")
NWLH_COLUMNS = (*LH_COLUMNS, "M_nu", "w0")
COLUMNS_BY_COUNT = {5: LH_COLUMNS, 7: NWLH_COLUMNS}
QUIJOTE_FIDUCIAL = Cosmology()  # the project's defaults are Quijote's fiducial cosmology
SEED_FILES = ("2LPT.param", "NGenIC.param")
PARAMETER_TABLE_URL = "https://github.com/franciscovillaescusa/Quijote-simulations/tree/master/<set>"


def is_latin_hypercube(set_name: str) -> bool:
    return set_name.startswith("latin_hypercube")


def _column_names(header: str, path: Path) -> tuple[str, ...]:
    names, unknown = [], []
    for token in header.lstrip("#").replace(",", " ").split():
        name = PARAMETER_ALIASES.get(token, token)
        (names if name in PARAMETER_NAMES else unknown).append(name)
    if unknown:
        raise QuijoteError(
            f"{path}: header names unknown parameters {unknown}; use names from {list(PARAMETER_NAMES)} "
            f"or aliases {sorted(PARAMETER_ALIASES)}, or delete the header line (5 columns = LH, 7 = nwLH)"
        )
    return tuple(names)


def read_parameter_table(path: str | Path) -> list[dict[str, float]]:
    """Rows of a latin_hypercube_params.txt as {parameter: value}, row i = simulation i."""
    path = Path(path)
    if not path.exists():
        raise QuijoteError(f"parameter file {path} not found; fix params_file=PATH")
    lines = path.read_text().splitlines()
    header = next((ln for ln in lines if ln.strip()), "")
    try:
        table = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise QuijoteError(f"{path}: not a table of numbers ({e}); expected one row per simulation") from e
    if header.startswith("#"):
        columns = _column_names(header, path)
    else:
        columns = COLUMNS_BY_COUNT.get(table.shape[1])
        if columns is None:
            raise QuijoteError(
                f"{path} has {table.shape[1]} columns and no '#' header naming them; "
                "expected 5 (LH: Omega_m Omega_b h n_s sigma_8) or 7 (nwLH: ... M_nu w), or add a header line"
            )
    if len(columns) != table.shape[1]:
        raise QuijoteError(f"{path}: the header names {len(columns)} columns, the rows have {table.shape[1]}")
    return [dict(zip(columns, row.tolist(), strict=True)) for row in table]


def find_parameter_table(layout: QuijoteLayout, params_file: str | None) -> Path:
    if params_file:
        return Path(params_file).expanduser()
    candidates = layout.parameter_file_candidates()
    for path in candidates:
        if path.exists():
            return path
    raise QuijoteError(
        f"set {layout.set_name!r} is a latin hypercube but no latin_hypercube_params.txt was found at "
        f"{[str(c) for c in candidates]}; download it from {PARAMETER_TABLE_URL.replace('<set>', layout.set_name)} "
        "and pass params_file=PATH"
    )


def simulation_parameters(
    layout: QuijoteLayout,
    indices: Sequence[int],
    *,
    params_file: str | None = None,
    cosmology: Mapping[str, float] | None = None,
) -> list[dict[str, float]]:
    """Full parameter sets (all of PARAMETER_NAMES) of the given simulations, validated by Cosmology."""
    overrides = dict(cosmology or {})
    if is_latin_hypercube(layout.set_name) or params_file:
        path = find_parameter_table(layout, params_file)
        rows = read_parameter_table(path)
        too_far = [i for i in indices if not 0 <= i < len(rows)]
        if too_far:
            raise QuijoteError(f"{path} has {len(rows)} rows; there is no row for simulations {too_far[:5]}")
        base = Cosmology.from_mapping(overrides, base=QUIJOTE_FIDUCIAL)
        return [_validated({**rows[i]}, base, f"{path} row {i}") for i in indices]
    if layout.set_name.startswith("fiducial") or overrides:
        params = _validated(overrides, QUIJOTE_FIDUCIAL, "cosmology=")
        return [dict(params) for _ in indices]
    raise QuijoteError(
        f"set {layout.set_name!r} is neither a latin hypercube nor a fiducial set, so its cosmology is not known here: "
        "give it as overrides of the fiducial (+cosmology.Omega_m=0.3275 on the command line) or params_file=PATH"
    )


def _validated(params: Mapping[str, float], base: Cosmology, where: str) -> dict[str, float]:
    try:
        return dataclasses.asdict(Cosmology.from_mapping(params, base=base))
    except ValueError as e:
        raise QuijoteError(f"{where}: {e}") from e


def read_seed(ics_dir: Path) -> int:
    """The initial random seed from the simulation's ICs parameter file, or -1 if not available."""
    for name in SEED_FILES:
        path = Path(ics_dir) / name
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            tokens = line.split("%")[0].split()
            if len(tokens) >= 2 and tokens[0] == "Seed":
                try:
                    return int(tokens[1])
                except ValueError:
                    break
    return -1
