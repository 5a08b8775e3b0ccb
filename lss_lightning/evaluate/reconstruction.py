"""Whole-box evaluation of velocity reconstruction against the truth and the linear-theory baseline.

For each test simulation: tile the box with target crops, predict each from its periodically padded
input crop, stitch; take the linear-theory velocity from the inputs: a ``velocity_linear*`` input channel
when the network gets one (e.g. ``velocity_linear_halos_rsd`` from the haloes in Wu 2023's setup), else
v = i a H f delta k / k^2 from the first scalar input (optional Gaussian smoothing), divided by the linear
bias of the evaluation settings in both cases; then, against the true target,
measure the spectra of the vector field itself, its magnitude |v|, divergence, vorticity (curl) and
the momentum (1 + delta) v, with T(k) = sqrt(P_pred / P_true) and r(k) = Re P_x / sqrt(P_pred P_true).
Spectra are summed over simulations before T and r are formed. No mass-assignment window is divided
out: prediction, baseline and truth share the CIC grid.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from lss_lightning.data.crops import Symmetry, apply_symmetry, cube_symmetries, stitch, tile_batches
from lss_lightning.evaluate import Tiles, test_boxes
from lss_lightning.evaluate.halo_velocities import HaloVelocityEvaluation, quadrupole_residual
from lss_lightning.evaluate.plots import plot_halo_clustering, plot_slices, plot_spectra
from lss_lightning.evaluate.report import flat_metrics, print_reconstruction_summary
from lss_lightning.fields.spectra import CrossStatistics, cross_statistics
from lss_lightning.fields.velocity import curl, divergence, linear_velocity
from lss_lightning.store.builder import StorePlan, build_store
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import parse_mass_bins
from lss_lightning.store.writer import SimulationProducts, write_json_atomic

log = logging.getLogger(__name__)
REPORT_K = (0.1, 0.3, 0.5, 1.0)  # h/Mpc at which metrics.json tabulates T and r


@torch.no_grad()
def predict_box(
    model,
    inputs: np.ndarray,
    crop: int,
    pad: int,
    batch_size: int = 8,
    *,
    kinds: Sequence[tuple[str, int]] | None = None,
    symmetries: Sequence[Symmetry] | None = None,
) -> np.ndarray:
    """Predict a whole periodic box (C_out, N, N, N) from its inputs (C_in, N, N, N) by tiling.

    With ``symmetries`` (e.g. the 16 cube symmetries that keep the line of sight) the prediction of a vector
    is the group average (1/|G|) sum_g g^-1 f(g x), exactly equivariant: a network that learnt the symmetry
    only approximately (from augmentation) cannot leave a fixed-direction velocity where its inputs peak.
    ``kinds`` gives (kind, channels) of each input field in channel order, to transform the inputs.
    """
    if symmetries:
        if kinds is None or sum(c for _, c in kinds) != inputs.shape[0]:
            raise ValueError(
                f"symmetrised prediction needs the (kind, channels) of all {inputs.shape[0]} input channels"
            )
        edges = np.cumsum([0, *(c for _, c in kinds)])
        total = None
        for sym in symmetries:
            moved = np.concatenate(
                [
                    apply_symmetry(inputs[a:b], k, sym)
                    for (k, _), a, b in zip(kinds, edges[:-1], edges[1:], strict=True)
                ]
            )
            pred = predict_box(model, np.ascontiguousarray(moved), crop, pad, batch_size)
            back = apply_symmetry(pred, "vector", sym.inverse()).astype(np.float64)
            total = back if total is None else total + back
        return (total / len(symmetries)).astype(np.float32)
    device = next(model.parameters()).device
    corners, tiles = [], []
    for chunk, batch in tile_batches(inputs, crop, pad, batch_size):
        corners += chunk
        tiles.extend(model.predict_physical(torch.from_numpy(batch).to(device)).float().cpu().numpy())
    return stitch(tiles, corners, inputs.shape[-1])


def derived_quantities(
    v: torch.Tensor, density: torch.Tensor | None, box_size: float
) -> dict[str, torch.Tensor]:
    """The fields compared in evaluation: the vector, its magnitude, divergence, curl, momentum."""
    out = {
        "vector": v,
        "magnitude": v.norm(dim=0, keepdim=True),
        "divergence": divergence(v, box_size),
        "vorticity": curl(v, box_size),
    }
    if density is not None:
        out["momentum"] = (1.0 + density) * v
    return out


@dataclass
class SpectraSums:
    """Shell sums of P_pred, P_true, P_cross accumulated over simulations, per quantity."""

    k: np.ndarray | None = None
    modes: np.ndarray | None = None
    sums: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, stats: CrossStatistics) -> None:
        self.k, self.modes = stats.k, stats.modes
        block = np.stack([stats.power_pred, stats.power_true, stats.power_cross])
        self.sums[name] = self.sums.get(name, 0.0) + block

    def statistics(self, name: str) -> CrossStatistics:
        p, t, x = self.sums[name]
        return CrossStatistics(k=self.k, modes=self.modes, power_pred=p, power_true=t, power_cross=x)


def _at(stats: CrossStatistics, k: float) -> dict[str, float | None]:
    j = int(np.nanargmin(np.abs(stats.k - k)))
    if abs(stats.k[j] - k) > 0.5 * (stats.k[1] - stats.k[0]):
        return {"k": None, "T": None, "r": None, "error_power": None}
    t, r = stats.transfer[j], stats.correlation[j]
    # power of the error relative to the truth: P(pred - true) / P_true = T^2 + 1 - 2 T r
    error = (stats.power_pred[j] + stats.power_true[j] - 2 * stats.power_cross[j]) / stats.power_true[j]
    return {"k": float(stats.k[j]), "T": _finite(t), "r": _finite(r), "error_power": _finite(error)}


def _finite(x) -> float | None:
    return float(x) if np.isfinite(x) else None


def _spectra_json(stats: CrossStatistics) -> dict:
    return {k: [_finite(x) for x in v] for k, v in stats.as_dict().items()}


def evaluate_reconstruction(
    model,
    store: FieldStore,
    sim_ids: Sequence[str],
    tiles: Tiles,
    out_dir: Path,
    *,
    target_names: Sequence[str],
    linear_smoothing: float = 0.0,
    linear_bias: float = 1.0,
    save_predictions: bool = True,
    halos: Mapping | None = None,
    progress: bool = True,
    symmetrise: bool = False,
) -> dict:
    """Predict the boxes of ``sim_ids``, compare with truth and linear theory, write metrics.json and
    (optionally) a field store of predictions under ``out_dir``; returns the metrics dict.

    halos: the halo-level evaluation settings (``evaluation.halos``: mass_bins, s_edges, n_mu; enabled:
    true / false / auto = when the store holds halo catalogues). symmetrise: average each prediction over the
    cube symmetries the data admit (16 keeping the line of sight in redshift space, else 48), see ``predict_box``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = BoxNames.of(store, tiles.input_names, target_names, linear_bias)
    model.eval()
    symmetries = cube_symmetries(store.los_axis if names.redshift_space else None) if symmetrise else None
    halo_eval = _halo_evaluation(store, names.target, halos or {})
    sums = {"unet": SpectraSums(), "linear": SpectraSums()}
    predictions: dict[str, dict[str, np.ndarray]] = {}
    slices = None
    for sim in track(sim_ids, description="evaluating test boxes", disable=not progress):
        fields = {n: store.read(sim, n) for n in names.to_read()}  # each read once
        inputs = np.concatenate([fields[n] for n in tiles.input_names])
        kinds = [(store.fields[n].kind, store.fields[n].channels) for n in tiles.input_names]
        pred = torch.from_numpy(
            predict_box(
                model, inputs, tiles.crop, tiles.pad, tiles.batch_size, kinds=kinds, symmetries=symmetries
            )
        )
        lin = _linear_baseline(store, sim, fields, names, linear_bias, linear_smoothing)
        _add_spectra(sums, store, fields, names, {"unet": pred, "linear": lin})
        predictions[sim] = {names.target: pred.numpy(), f"{names.target}_linear": lin.numpy()}
        if halo_eval is not None:
            halo_eval.add(
                store.read_halos(sim), {"unet": pred, "linear": lin}, store.cosmology(sim).a_h(store.redshift)
            )
        if slices is None:  # the first box, for the slice plot
            slices = {"input": fields[names.density], "truth": fields[names.target]}
            slices.update(unet=pred.numpy(), linear=lin.numpy())
    metrics = _metrics(store, sim_ids, names, linear_bias, sums, halo_eval)
    write_json_atomic(out_dir / "metrics.json", metrics)  # whole or absent (a kill mid-write)
    if save_predictions:
        write_predictions(out_dir / "predictions", store, predictions, names.target)
    metrics["_sums"] = sums
    metrics["_slices"] = slices
    return metrics


@dataclass(frozen=True)
class BoxNames:
    """The stored fields one evaluation reads: the target, the input density and linear-velocity fields
    the baseline comes from, and the matter density of the target's space (for the momentum)."""

    inputs: tuple[str, ...]
    target: str
    density: str
    linear: str | None
    matter: str | None
    redshift_space: bool

    @classmethod
    def of(
        cls, store: FieldStore, inputs: Sequence[str], targets: Sequence[str], linear_bias: float
    ) -> BoxNames:
        if len(targets) != 1 or store.fields[targets[0]].kind != "vector":
            raise ValueError(f"velocity evaluation needs one vector target, got {list(targets)}")
        target = targets[0]
        density = next((n for n in inputs if store.fields[n].kind == "scalar"), None)
        if density is None:
            raise ValueError(f"the linear baseline needs a scalar density among the inputs {list(inputs)}")
        if linear_bias <= 0:
            raise ValueError(f"evaluation.linear_bias must be positive, got {linear_bias}")
        matter = "density_rsd" if store.fields[target].space == "redshift" else "density"
        return cls(
            inputs=tuple(inputs),
            target=target,
            density=density,
            linear=next((n for n in inputs if n.startswith("velocity_linear")), None),
            matter=matter if matter in store.fields else None,
            redshift_space=any(store.fields[n].space == "redshift" for n in [*inputs, target]),
        )

    def to_read(self) -> set[str]:
        return {*self.inputs, self.target, self.matter} - {None}


def _linear_baseline(store, sim, fields, names: BoxNames, bias: float, smoothing: float) -> torch.Tensor:
    """Linear theory: the stored linear velocity (an input) divided by the tracers' bias, or computed from
    the input density; for a momentum target times (1 + delta) of the matter."""
    if names.linear is not None:
        lin = torch.from_numpy(fields[names.linear]) / bias
    else:
        a_h_f = store.cosmology(sim).a_h_f(store.redshift)
        lin = linear_velocity(
            torch.from_numpy(fields[names.density]), store.box_size, a_h_f, smoothing=smoothing, bias=bias
        )
    if names.target.startswith("momentum") and names.matter:
        lin = (1.0 + torch.from_numpy(fields[names.matter])) * lin
    return lin


def _add_spectra(sums: Mapping[str, SpectraSums], store, fields, names: BoxNames, estimates: Mapping) -> None:
    """Cross statistics of each estimate with the truth, for every derived quantity (vector, divergence,
    curl, momentum) the target has."""
    density = torch.from_numpy(fields[names.matter]) if names.matter else None
    if names.target.startswith("momentum"):
        density = None  # the target already is a momentum
    truth_q = derived_quantities(torch.from_numpy(fields[names.target]), density, store.box_size)
    for label, estimate in estimates.items():
        for name, q in derived_quantities(estimate, density, store.box_size).items():
            sums[label].add(name, cross_statistics(q, truth_q[name], store.box_size))


def _metrics(store, sim_ids, names: BoxNames, bias: float, sums: Mapping, halo_eval) -> dict:
    """The metrics.json of an evaluation: what was compared, the spectra, r and T at ``REPORT_K``, haloes."""
    metrics = {
        "target": names.target,
        "input_density": names.density,
        "linear_baseline": f"{names.linear} / {bias:g}" if names.linear else f"from {names.density}",
        "simulations": list(sim_ids),
        "source": store.manifest.get("source", "unknown"),
        "box_size": store.box_size,
        "grid": store.grid,
        "redshift": store.redshift,
        "report_k": list(REPORT_K),
        "summary": {},
        "spectra": {},
    }
    for label, s in sums.items():
        metrics["spectra"][label] = {name: _spectra_json(s.statistics(name)) for name in s.sums}
        metrics["summary"][label] = {
            name: {f"{k:g}": _at(s.statistics(name), k) for k in REPORT_K} for name in s.sums
        }
    if halo_eval is not None:
        metrics["halos"] = halo_eval.summary()
        metrics["halos"]["quadrupole_residual"] = {
            label: quadrupole_residual(metrics["halos"], label) for label in ("unet", "linear")
        }
    return metrics


def _halo_evaluation(store: FieldStore, target: str, settings: Mapping) -> HaloVelocityEvaluation | None:
    enabled = settings.get("enabled", "auto")
    if enabled is False or (enabled == "auto" and not store.halos):
        return None
    if not store.halos:
        raise ValueError(
            f"evaluation.halos.enabled=true but {store.root} holds no halo catalogues; "
            "build it with solver=pm (mocks) or halo_catalogue=true (Quijote), or set evaluation.halos.enabled=false"
        )
    bins = settings.get("mass_bins") or store.manifest.get("generator", {}).get("mass_bins") or [[0.0, None]]
    return HaloVelocityEvaluation(
        parse_mass_bins(bins),
        ("unet", "linear"),
        box_size=store.box_size,
        los_axis=store.los_axis,
        redshift_space=store.fields[target].space == "redshift",
        s_edges=settings.get("s_edges"),
        n_mu=int(settings.get("n_mu", 20)),
    )


def write_predictions(
    root: Path, store: FieldStore, predictions: dict[str, dict[str, np.ndarray]], target: str
) -> None:
    """Predicted and linear-theory fields as a field store (same box, grid and cosmologies as the truth)."""
    specs = {name: store.fields[target] for name in (target, f"{target}_linear")}  # same kind, units, space
    sims = [store.simulation(s) for s in predictions]
    geometry = (store.box_size, store.grid, store.redshift, store.los_axis)
    truth = {"truth_store": str(store.root)}
    plan = StorePlan(root, f"prediction of {target} from {store.root}", *geometry, specs, sims, truth)
    produce = lambda sim, _report: SimulationProducts(predictions[sim["id"]], {})  # noqa: E731
    build_store(plan, produce, progress=False, reconcile_keys=())


def evaluate_task(model, dm, settings: Mapping, out_dir: Path) -> tuple[dict[str, float], dict[str, Path]]:
    """The evaluator of field targets (``lss_lightning.evaluate``): metrics, plots and tables of the test boxes."""
    store, sims = dm.open_store(), test_boxes(dm)
    metrics = evaluate_reconstruction(
        model,
        store,
        sims,
        Tiles.of(dm, settings),
        out_dir,
        target_names=dm.target_names,
        linear_smoothing=float(settings.get("linear_smoothing", 0.0)),
        linear_bias=float(settings.get("linear_bias", 1.0)),
        save_predictions=bool(settings.get("save_predictions", True)),
        halos=settings.get("halos"),
        symmetrise=bool(settings.get("symmetrise", False)),
    )
    figures = {}
    if settings.get("plots", True):
        title = f"{metrics['target']} from {', '.join(dm.input_names)}: {len(sims)} test boxes of {store.box_size:g} Mpc/h"
        figures["spectra"] = plot_spectra(metrics["_sums"], out_dir / "spectra.png", title)
        figures["slices"] = plot_slices(metrics["_slices"], store.box_size, out_dir / "slices.png")
        if "halos" in metrics:
            figures["halos"] = plot_halo_clustering(metrics["halos"], out_dir / "halo_clustering.png", title)
    flat = {
        f"test/{k}": v
        for k, v in flat_metrics(metrics["summary"]).items()
        if k.endswith(("/T", "/r", "/error_power"))
    }
    if "halos" in metrics:
        flat.update(flat_metrics(metrics["halos"]["quadrupole_residual"], "test/halos/quadrupole_residual/"))
    print_reconstruction_summary(metrics, out_dir)
    return flat, figures
