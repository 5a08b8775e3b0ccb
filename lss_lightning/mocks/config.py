"""MockConfig: everything that defines a mock store (mirrors conf/mock/default.yaml), validated once when
it is built, and the settings blocks it hands to the solver (PM), the halo finder (FoF) and the light cone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from lss_lightning.fields.particles import (
    LINEAR_FIELDS,
    PARTICLE_FIELDS,
)
from lss_lightning.fields.redshift_errors import RedshiftErrors
from lss_lightning.fields.tracers import (
    GALAXY_FIELDS,
    expand_halo_fields,
    is_catalogue_field,
    is_galaxy_field,
)
from lss_lightning.galaxies import HODParameters, check_hod, check_hod_prior
from lss_lightning.mocks.lightcone import LightconeSettings
from lss_lightning.mocks.pm import PMSettings
from lss_lightning.mocks.survey import load_mask, observed_cells
from lss_lightning.store.schema import LIGHTCONE_FIELD, parse_mass_bins

SOLVERS = ("lpt", "pm")


RUN_ONLY = ("store", "n_sims", "device", "shard", "num_shards")  # settings that do not change the data


@dataclass(frozen=True)
class FoFSettings:
    """Friends-of-friends settings (the ``fof`` block of conf/mock/default.yaml)."""

    linking_length: float = 0.2  # of the mean interparticle separation
    min_particles: int = 20

    def __post_init__(self):
        if not 0 < self.linking_length < 1 or int(self.min_particles) < 2:
            raise ValueError(
                f"need 0 < fof.linking_length < 1 and fof.min_particles >= 2, "
                f"got {self.linking_length}, {self.min_particles}"
            )


@dataclass
class MockConfig:
    """Everything that defines a mock store (mirrors conf/mock/default.yaml)."""

    store: str
    n_sims: int = 16
    grid: int = 64
    particles: int | None = None  # particles per side; None = grid
    box_size: float = 128.0  # Mpc/h
    redshift: float = 0.0
    seed: int = 42
    solver: str = "pm"  # lpt | pm
    lpt_order: int = 2  # the LPT solver's order, and the order of the PM initial conditions
    pm: dict = field(default_factory=dict)  # PMSettings: steps, mesh_factor, a_start, stepping
    fof: dict = field(default_factory=dict)  # FoFSettings: linking_length, min_particles
    # LightconeSettings (ra, dec, z, snapshots, margin, mass_min, observer, rsd, cones_per_box, survey: mask,
    # redshift errors, n(z), mocks/survey.py): a light-cone store instead
    lightcone: dict | None = None
    mass_bins: list | None = field(default_factory=lambda: [[1.0e13, None]])  # Msun/h, [lo, hi)
    allow_empty_bins: bool = False  # an empty mass bin (or no galaxies) gives zeros instead of an error
    power: str = "camb"  # camb | eh
    design: str = "seeds"  # seeds | latin_hypercube
    prior: str | dict = "quijote_lh"
    cosmology: dict = field(default_factory=dict)  # overrides of the Quijote fiducial
    fields: list = field(default_factory=lambda: ["density", "velocity", "momentum", "density_rsd"])
    # HODParameters (Zheng 2007: log_M_min, sigma_logM, log_M0, log_M1, alpha, alpha_c, alpha_s): populate
    # the FoF haloes with galaxies (stored in galaxies/, fields galaxies[_rsd], ...); None: no galaxies
    hod: dict | None = None
    hod_prior: dict | None = None  # {name: [lo, hi]}: each simulation's HOD from a Latin hypercube over it
    # RedshiftErrors (sigma_z, outlier_fraction; fields/redshift_errors.py): the galaxies' redshift errors in
    # their _rsd fields (a box; light cones use lightcone.survey); None or zeros: none
    redshift_errors: dict | None = None
    los_axis: int = 2
    linear_smoothing: float = 0.0  # Mpc/h, Gaussian smoothing of velocity_linear fields
    fixed_amplitude: bool = False
    compression: str | None = None
    chunk: int = 32
    device: str = "auto"
    shard: int = 0
    num_shards: int = 1

    @classmethod
    def from_mapping(cls, values: Mapping, **overrides) -> MockConfig:
        """From a config mapping (a DictConfig or dict, e.g. ``data.generate``); a key that is not a
        setting raises ValueError naming it and the known ones (conf/mock/default.yaml documents each)."""
        values = OmegaConf.to_container(values, resolve=True) if isinstance(values, DictConfig) else values
        values = {**values, **overrides}
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown mock settings {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**values)

    def __post_init__(self):
        for name in self.__dataclass_fields__:  # Hydra hands over DictConfig / ListConfig: plain containers
            value = getattr(self, name)
            if isinstance(value, DictConfig | ListConfig):
                setattr(self, name, OmegaConf.to_container(value, resolve=True))
        self.pm, self.fof, self.cosmology = dict(self.pm), dict(self.fof), dict(self.cosmology)
        self.lightcone = dict(self.lightcone) if self.lightcone else None
        self.mass_bins = [list(b) for b in self.mass_bins] if self.mass_bins else None
        self.fields = expand_halo_fields(list(self.fields), len(self.mass_bins or []))
        if self.n_sims < 1 or self.grid < 4 or self.box_size <= 0:
            raise ValueError(
                f"need n_sims >= 1, grid >= 4, box_size > 0; got {self.n_sims}, {self.grid}, {self.box_size}"
            )
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.lpt_order not in (1, 2):
            raise ValueError(f"lpt_order must be 1 or 2, got {self.lpt_order}")
        if self.design not in ("seeds", "latin_hypercube"):
            raise ValueError(f"design must be 'seeds' or 'latin_hypercube', got {self.design!r}")
        if self.los_axis not in (0, 1, 2):
            raise ValueError(f"los_axis must be 0, 1 or 2, got {self.los_axis}")
        if not self.redshift >= 0:  # also NaN; a = 1 / (1 + z) needs z > -1, and a mock ends today or before
            raise ValueError(
                f"redshift must be >= 0 (the output of a mock: z = 0 today, earlier times z > 0), got {self.redshift}"
            )
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"need 0 <= shard < num_shards, got {self.shard}, {self.num_shards}")
        pm, _, _ = self.pm_settings, self.fof_settings, self.bins  # each raises on bad values
        self._check_galaxy_model()
        if self.lightcone is not None:
            cone = self.lightcone_settings
            if self.solver != "pm" or self.fields != [LIGHTCONE_FIELD]:
                raise ValueError(
                    f"a lightcone store needs solver=pm and fields=[{LIGHTCONE_FIELD}] (the histogram has grid^3 "
                    f"cells over RA, DEC, z); got solver={self.solver}, fields={self.fields}"
                )
            pm.scale_factors(1.0 / (1.0 + cone.snapshot_redshifts()[0]))
            self._check_survey(cone)
            return
        if LIGHTCONE_FIELD in self.fields:
            raise ValueError(
                f"field {LIGHTCONE_FIELD!r} needs a lightcone block (e.g. +lightcone.snapshots=6)"
            )
        if self.solver == "pm":
            pm.scale_factors(1.0 / (1.0 + self.redshift))  # a_start must come before the output
        self._check_fields()

    def _check_survey(self, cone: LightconeSettings) -> None:
        """lightcone.survey checked against the histogram (mask file shape, holes on the footprint) and written
        out in full with the mask file's digest, so stores with other survey effects refuse to mix; dropped
        when it changes nothing (the store then matches one made without it)."""
        survey = cone.survey
        if survey is None or not survey.active:
            self.lightcone.pop("survey", None)
            return
        ra_edges, dec_edges, _ = cone.histogram_edges(self.grid)
        observed_cells(survey, ra_edges, dec_edges)  # raises on a bad mask file or hole
        digest = load_mask(survey.mask, self.grid, survey.mask_sha256)[1] if survey.mask else None
        self.lightcone["survey"] = survey.to_dict(digest)

    def _check_fields(self) -> None:
        """Every field is one the mocks make; halo and galaxy fields with the particle mesh (and an hod block)."""
        for name in self.fields:
            if name in LINEAR_FIELDS or name.removesuffix("_rsd") in PARTICLE_FIELDS:
                continue
            if not is_catalogue_field(name) and not is_galaxy_field(name):
                raise ValueError(
                    f"mocks cannot make field {name!r}; choose from {list(PARTICLE_FIELDS)} (+ '_rsd'), "
                    f"{list(LINEAR_FIELDS)}, and with solver=pm: halos, halos_rsd, halo_velocity[_rsd], "
                    "halo_mass[_rsd], halo_number[_rsd], velocity_linear_halos[_rsd], and with an hod block "
                    f"{', '.join(f'{g}[_rsd]' for g in GALAXY_FIELDS)}"
                )
            if self.solver != "pm":
                raise ValueError(
                    f"field {name!r} needs haloes, which only the particle mesh makes: set solver=pm"
                )
            if is_galaxy_field(name) and self.hod is None:
                raise ValueError(
                    f"field {name!r} needs galaxies: give an hod block to populate the haloes, e.g. "
                    "hod={} (the default HOD) or +hod.log_M_min=13.0"
                )

    def _check_galaxy_model(self) -> None:
        """hod and hod_prior, checked and written out in full (every HOD parameter, canonical names), so
        that equal models give equal manifests; raises ValueError naming the bad entry."""
        if self.lightcone is not None and self.redshift_errors:
            raise ValueError(
                "redshift_errors is for the galaxies of a box; a light cone takes its redshift errors in "
                "lightcone.survey (e.g. +lightcone.survey.sigma_z=0.002)"
            )
        if self.hod is None:
            for block in ("hod_prior", "redshift_errors"):
                if getattr(self, block):
                    raise ValueError(f"{block} needs an hod block (the galaxies it acts on): add hod={{}}")
            self.hod_prior = self.redshift_errors = None
            return
        if self.solver != "pm" or self.lightcone is not None:
            raise ValueError(
                "hod populates the FoF haloes of a box, which only the particle mesh makes: set solver=pm "
                "(and no lightcone block), or hod=null"
            )
        base = check_hod(self.hod)
        self.hod = base.to_dict()
        self.hod_prior = check_hod_prior(self.hod_prior, base) if self.hod_prior else None
        self._check_redshift_errors()

    def _check_redshift_errors(self) -> None:
        """redshift_errors written out in full, or None when it changes nothing (the store then matches one
        made without it); it needs a galaxy field in redshift space to act on."""
        if not self.redshift_errors:
            self.redshift_errors = None
            return
        errors = RedshiftErrors.from_mapping(self.redshift_errors)
        if not errors.active:
            self.redshift_errors = None
            return
        if not any(is_galaxy_field(f) and f.endswith("_rsd") for f in self.fields):
            raise ValueError(
                f"redshift_errors act on the galaxies' redshift-space fields, and fields={self.fields} has none: "
                f"add one ({', '.join(f'{g}_rsd' for g in GALAXY_FIELDS)}) or drop redshift_errors"
            )
        self.redshift_errors = errors.to_dict()

    @property
    def redshift_error_settings(self) -> RedshiftErrors | None:
        return None if self.redshift_errors is None else RedshiftErrors.from_mapping(self.redshift_errors)

    @property
    def hod_parameters(self) -> HODParameters | None:
        """The galaxy model (the one of every simulation without hod_prior; with it, the fixed values)."""
        return None if self.hod is None else HODParameters.from_mapping(self.hod)

    @property
    def n_particles(self) -> int:
        return self.particles or self.grid

    @property
    def pm_settings(self) -> PMSettings:
        return _settings(PMSettings, self.pm, "pm")

    @property
    def fof_settings(self) -> FoFSettings:
        return _settings(FoFSettings, self.fof, "fof")

    @property
    def bins(self) -> list:
        return parse_mass_bins(self.mass_bins)

    @property
    def lightcone_settings(self) -> LightconeSettings | None:
        return None if self.lightcone is None else _settings(LightconeSettings, self.lightcone, "lightcone")

    @property
    def store_redshift(self) -> float:
        """The redshift recorded in the store: the output's, or the middle of a light cone's range."""
        return self.redshift if self.lightcone is None else float(np.mean(self.lightcone_settings.z))

    def halo_fields(self) -> list[str]:
        return [f for f in self.fields if is_catalogue_field(f)]

    def describe(self) -> str:
        solver = (
            f"PM {self.pm_settings.steps} steps, mesh {self.pm_settings.mesh_factor * self.n_particles}^3"
            if self.solver == "pm"
            else f"{self.lpt_order}LPT"
        )
        return f"{self.n_particles}^3 particles, {solver} -> {self.grid}^3"


def _settings(kind, values: Mapping, block: str):
    unknown = sorted(set(values) - set(kind.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown {block} settings {unknown}; known: {sorted(kind.__dataclass_fields__)}")
    return kind(**values)
