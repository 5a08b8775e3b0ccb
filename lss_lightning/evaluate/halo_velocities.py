"""Halo-level evaluation of velocity reconstruction (Wu et al. 2023): velocities at the haloes, and the
redshift-space correction measured by the halo 2PCF.

Haloes are taken where the reconstruction sees them: at their redshift-space positions s = x + v_los / (a H)
(periodic) when the reconstructed field lives in redshift space, at their real positions otherwise. Each
reconstructed velocity field (U-net, linear theory) is read there with CIC, the project's grid convention
(``fields.mesh.cic_readout``), and compared with the halo's own velocity from the catalogue:
- per mass bin: rms and mean (bias) of the line-of-sight residual, rms of the 3D residual |v_rec - v|, the
  rms of the true line-of-sight velocity for scale, the correlation of reconstructed and true v_los, and the
  mean residual of each component (``bias_xyz``, km/s, axes x, y, z). A bias in all three components points
  at the reconstruction not respecting the cube symmetries (a network that learnt them only approximately
  from augmentation) or at a spatial misalignment; a bias along the line of sight alone at something
  redshift-space specific (the shift s = x + v_los / (a H), the flip of the line-of-sight axis);
- the halo 2PCF xi(s, mu) and its multipoles (``evaluate.clustering``) in real space, in redshift space,
  and after moving each halo back by the reconstructed line-of-sight velocity, s - v_rec,los / (a H).
  Counts are summed over the test boxes, so xi is that of the combined volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from lss_lightning.evaluate.clustering import CorrelationSMu, correlation_s_mu
from lss_lightning.fields.mesh import cic_readout
from lss_lightning.store.schema import HaloCatalogue, MassBin

REAL, REDSHIFT = "real space", "redshift space"


def default_s_edges(box_size: float) -> np.ndarray:
    """15 bins of s up to min(60 Mpc/h, 0.45 L), from 0."""
    return np.linspace(0.0, min(60.0, 0.45 * box_size), 16)


class HaloVelocityEvaluation:
    """Accumulates per-halo velocity residuals and pair counts over test boxes; see the module docstring."""

    def __init__(
        self,
        bins: Sequence[MassBin],
        labels: Sequence[str],
        *,
        box_size: float,
        los_axis: int,
        redshift_space: bool,
        s_edges: np.ndarray | None = None,
        n_mu: int = 20,
    ):
        if not bins:
            raise ValueError("halo evaluation needs at least one mass bin (evaluation.halos.mass_bins)")
        self.bins, self.labels = list(bins), list(labels)
        self.box_size, self.los_axis, self.redshift_space = float(box_size), int(los_axis), redshift_space
        self.s_edges = default_s_edges(box_size) if s_edges is None else np.asarray(s_edges, float)
        self.n_mu = int(n_mu)
        # per label and bin: [count, sum dv_los, sum dv_los^2, sum |dv|^2, sum v_los^2, sum v_rec_los^2,
        # sum v v_rec (los), sum dv_x, sum dv_y, sum dv_z]
        self._sums = {label: np.zeros((len(self.bins), 10)) for label in self.labels}
        self.correlations: dict[str, CorrelationSMu] = {}

    def add(
        self, catalogue: HaloCatalogue, fields: Mapping[str, torch.Tensor | np.ndarray], a_h: float
    ) -> None:
        """One test box: its catalogue and each label's reconstructed velocity (3, N, N, N) in km/s."""
        keep = np.zeros(len(catalogue), dtype=bool)
        for b in self.bins:
            keep |= b.select(catalogue.masses)
        haloes = catalogue.subset(keep)
        if len(haloes) == 0:
            return
        x = haloes.positions.astype(np.float64)
        v = haloes.velocities.astype(np.float64)
        s = x.copy()
        s[:, self.los_axis] = np.mod(x[:, self.los_axis] + v[:, self.los_axis] / a_h, self.box_size)
        seen = s if self.redshift_space else x
        positions = {REAL: x, REDSHIFT: s}
        for label in self.labels:
            grid = torch.as_tensor(np.asarray(fields[label]), dtype=torch.float32)
            v_rec = cic_readout(grid, torch.from_numpy(seen).float(), self.box_size).double().numpy()
            self._accumulate(label, haloes.masses, v, v_rec)
            back = s.copy()
            back[:, self.los_axis] = np.mod(
                s[:, self.los_axis] - v_rec[:, self.los_axis] / a_h, self.box_size
            )
            positions[label] = back
        for case, pos in positions.items():
            counts = correlation_s_mu(pos, self.box_size, self.s_edges, self.n_mu, self.los_axis)
            self.correlations[case] = (
                counts if case not in self.correlations else self.correlations[case] + counts
            )

    def _accumulate(self, label: str, masses: np.ndarray, v: np.ndarray, v_rec: np.ndarray) -> None:
        los = self.los_axis
        dv = v_rec - v
        for i, b in enumerate(self.bins):
            sel = b.select(masses)
            self._sums[label][i] += [
                sel.sum(),
                dv[sel, los].sum(),
                (dv[sel, los] ** 2).sum(),
                (dv[sel] ** 2).sum(),
                (v[sel, los] ** 2).sum(),
                (v_rec[sel, los] ** 2).sum(),
                (v[sel, los] * v_rec[sel, los]).sum(),
                *dv[sel].sum(axis=0),
            ]

    def summary(self) -> dict:
        """Per label and mass bin the velocity statistics (km/s); per case the multipoles and xi_1D(mu)."""
        velocities = {}
        for label, sums in self._sums.items():
            rows = {}
            for b, (n, d, d2, d3, t2, r2, tr, *d_xyz) in zip(self.bins, sums, strict=True):
                if n == 0:
                    rows[b.describe()] = {"n_halos": 0}
                    continue
                rows[b.describe()] = {
                    "n_halos": int(n),
                    "los_rms": float(np.sqrt(d2 / n)),
                    "los_bias": float(d / n),
                    "rms_3d": float(np.sqrt(d3 / n)),
                    "true_los_rms": float(np.sqrt(t2 / n)),
                    "los_correlation": float(tr / np.sqrt(t2 * r2)) if t2 > 0 and r2 > 0 else None,
                    "bias_xyz": [float(x / n) for x in d_xyz],
                }
            velocities[label] = rows
        clustering = {}
        for case, counts in self.correlations.items():
            multipoles = counts.multipoles((0, 2, 4))
            clustering[case] = {
                "s": counts.s.tolist(),
                **{f"xi{ell}": m.tolist() for ell, m in multipoles.items()},
                "xi0_error": counts.xi_monopole_error().tolist(),
                "mu": counts.mu.tolist(),
                "xi_1d_mu": counts.xi_of_mu().tolist(),
            }
        return {"velocities": velocities, "clustering": clustering, "s_edges": self.s_edges.tolist()}


def quadrupole_residual(summary: Mapping, case: str, s_max: float | None = None) -> float:
    """sum over s of |xi_2(case) - xi_2(real space)| s^2 relative to sum |xi_2(redshift) - xi_2(real)| s^2:
    0 = the redshift-space distortion fully removed, 1 = not at all (a one-number summary of the figure)."""
    c = summary["clustering"]
    s = np.asarray(c[REAL]["s"])
    keep = s <= (s_max or np.inf)
    real = np.asarray(c[REAL]["xi2"])
    off = np.abs(np.asarray(c[REDSHIFT]["xi2"]) - real)[keep] @ s[keep] ** 2
    return (
        float(np.abs(np.asarray(c[case]["xi2"]) - real)[keep] @ s[keep] ** 2 / off)
        if off > 0
        else float("nan")
    )
