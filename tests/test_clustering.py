"""The halo 2PCF xi(s, mu): zero for Poisson points, the FFT correlation of a known field, Kaiser's multipoles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss_lightning.cosmology import Cosmology
from lss_lightning.evaluate.clustering import correlation_s_mu, kaiser_multipoles, volume_average
from lss_lightning.evaluate.halo_velocities import HaloVelocityEvaluation, quadrupole_residual
from lss_lightning.fields.mesh import cic_readout
from lss_lightning.fields.spectra import correlation_function
from lss_lightning.fields.velocity import linear_velocity
from lss_lightning.mocks.ics import gaussian_field_k
from lss_lightning.store.schema import HaloCatalogue, parse_mass_bins


def test_poisson_points_are_uncorrelated():
    rng = np.random.default_rng(0)
    box = 200.0
    cf = correlation_s_mu(rng.uniform(0, box, (20000, 3)), box, np.arange(5.0, 45.0, 5.0), n_mu=10)
    xi0 = cf.multipoles((0,))[0]
    pull = xi0 / cf.xi_monopole_error()
    assert np.all(np.abs(pull) < 4) and abs(pull.mean()) < 2 / np.sqrt(len(pull)) * 2
    assert abs(cf.dd.sum() / cf.rr.sum() - 1) < 0.01


def test_lognormal_points_have_the_fft_correlation_of_their_field():
    """Points Poisson-sampled from 1 + delta of a lognormal field (uniform within cells): their pair-count xi
    equals the field's own xi by FFT (the Fourier transform of its P(k)) beyond a few cells."""
    n, box = 32, 128.0
    gaussian = gaussian_field_k(lambda k: 6e3 * np.exp(-((5.0 * k) ** 2)) * (k / 0.05) ** -1, n, box, seed=5)
    g = torch.fft.irfftn(gaussian, s=(n, n, n)).double()
    rng = np.random.default_rng(1)
    density = torch.exp(g).numpy()  # lognormal 1 + delta
    density /= density.mean()
    counts = rng.poisson(density * 15000 / n**3)
    cells = np.repeat(np.argwhere(counts >= 0), counts.reshape(-1), axis=0)
    points = (cells + rng.uniform(size=cells.shape)) * (box / n)
    edges = np.arange(12.0, 29.0, 4.0)  # 3 to 7 cells
    cf = correlation_s_mu(points, box, edges, n_mu=4)
    fft = correlation_function(torch.from_numpy(density - 1).float(), box, r_edges=edges)
    xi_pairs = cf.multipoles((0,))[0]
    assert fft.power.min() > 0.008 and fft.power.max() > 0.08  # clustering well above the pair-count noise
    np.testing.assert_allclose(xi_pairs, fft.power, rtol=0.1, atol=3 * cf.xi_monopole_error().max())


def _linear_catalogue(seed: int, cosmo: Cosmology, n: int = 64, box: float = 256.0, points: int = 12000):
    """Points Poisson-sampled from 1 + delta_L (linear field of 0.4 P_lin(z = 0), smoothed on 6 Mpc/h, unit
    bias) and moved along z by their linear velocity v = i a H f delta k / k^2 (read at each point):
    real-space positions, redshift-space positions and velocities (km/s)."""
    delta_k = gaussian_field_k(
        lambda k: 0.4 * cosmo.linear_power(k, method="eh") * np.exp(-((6.0 * k) ** 2)), n, box, seed=seed
    )
    delta = torch.fft.irfftn(delta_k, s=(n, n, n))
    rng = np.random.default_rng(seed)
    rate = np.clip(1 + delta.numpy(), 0, None)  # 0.3% of the cells are clipped
    counts = rng.poisson(rate / rate.mean() * points / n**3)
    cells = np.repeat(np.argwhere(counts >= 0), counts.reshape(-1), axis=0)
    x = (cells + rng.uniform(size=cells.shape)) * (box / n)
    v = linear_velocity(delta, box, cosmo.a_h_f(0.0))
    vel = cic_readout(v, torch.from_numpy(x).float(), box).double().numpy()
    s = x.copy()
    s[:, 2] = np.mod(x[:, 2] + vel[:, 2] / cosmo.a_h(0.0), box)
    return x, s, vel


@pytest.mark.slow
def test_linearly_displaced_points_have_kaiser_multipoles():
    """Summed over 6 boxes of 256 Mpc/h: the redshift-space monopole boost, the quadrupole and the ratio
    Q = xi_2 / (xi_0 - xibar_0) of Kaiser (1987) / Hamilton (1992) at 20-44 Mpc/h, beta = f = 0.51."""
    cosmo = Cosmology()
    f = float(cosmo.growth_rate(0.0))
    edges = np.r_[np.arange(0.5, 20.0, 2.5), np.arange(20.0, 45.0, 8.0)]
    real = red = None
    for seed in range(6):
        x, s, _ = _linear_catalogue(seed, cosmo)
        r_, s_ = correlation_s_mu(x, 256.0, edges), correlation_s_mu(s, 256.0, edges)
        real, red = (r_, s_) if real is None else (real + r_, red + s_)
    keep = edges[:-1] >= 20.0
    xi_real = real.multipoles((0,))[0]
    xi0, xi2 = (red.multipoles((0, 2))[ell] for ell in (0, 2))
    predicted = kaiser_multipoles(real.s, xi_real, beta=f)
    assert xi_real[keep].min() > 0.005  # signal
    assert xi0[keep].sum() / xi_real[keep].sum() == pytest.approx(1 + 2 * f / 3 + f**2 / 5, rel=0.1)
    assert xi2[keep].sum() / predicted[2][keep].sum() == pytest.approx(1.0, rel=0.2)
    q = xi2[keep].sum() / (xi0 - volume_average(red.s, xi0))[keep].sum()
    assert q == pytest.approx((4 * f / 3 + 4 * f**2 / 7) / (1 + 2 * f / 3 + f**2 / 5), rel=0.2)
    assert np.all(xi2[keep] < 0)  # squashed along the line of sight on large scales


def test_moving_haloes_back_by_their_true_velocities_restores_real_space():
    cosmo = Cosmology()
    x, s, v = _linear_catalogue(0, cosmo, points=5000)
    back = s.copy()
    back[:, 2] = np.mod(s[:, 2] - v[:, 2] / cosmo.a_h(0.0), 256.0)
    edges = np.arange(5.0, 50.0, 5.0)
    restored, real = correlation_s_mu(back, 256.0, edges), correlation_s_mu(x, 256.0, edges)
    np.testing.assert_array_equal(restored.dd, real.dd)
    assert not np.array_equal(correlation_s_mu(s, 256.0, edges).dd, real.dd)


def test_halo_evaluation_with_the_true_velocity_field_restores_real_space():
    """Haloes whose redshift-space positions sit on grid nodes holding their own velocities: the CIC
    readout returns each halo's velocity, the residuals vanish, and moving the haloes back puts them on
    their real positions, so the corrected pair counts are the real-space ones (a zero field does not)."""
    rng = np.random.default_rng(3)
    box, n, a_h = 100.0, 16, 60.0
    nodes = rng.choice(n**3, 3000, replace=False)
    s = np.stack(np.unravel_index(nodes, (n, n, n)), axis=1) * (box / n)
    v = rng.normal(0.0, 300.0, s.shape)
    x = s.copy()
    x[:, 2] = np.mod(s[:, 2] - v[:, 2] / a_h, box)
    truth = np.zeros((3, n**3), dtype=np.float32)
    truth[:, nodes] = v.T
    catalogue = HaloCatalogue(
        positions=x.astype(np.float32),
        velocities=v.astype(np.float32),
        masses=10 ** rng.uniform(13, 14, 3000),
        n_particles=np.full(3000, 50),
    )
    evaluation = HaloVelocityEvaluation(
        parse_mass_bins([[1e13, 3e13], [3e13, None]]),
        ["truth", "zero"],
        box_size=box,
        los_axis=2,
        redshift_space=True,
        s_edges=np.arange(2.0, 41.0, 3.0),
    )
    grid = torch.from_numpy(truth.reshape(3, n, n, n))
    evaluation.add(catalogue, {"truth": grid, "zero": torch.zeros_like(grid)}, a_h=a_h)
    summary = evaluation.summary()
    for row in summary["velocities"]["truth"].values():
        assert row["los_rms"] < 0.05 and row["rms_3d"] < 0.05 and row["n_halos"] > 1000  # km/s
        assert row["los_correlation"] == pytest.approx(1.0, abs=1e-6)
    for row in summary["velocities"]["zero"].values():
        assert row["los_rms"] == pytest.approx(row["true_los_rms"]) and row["true_los_rms"] > 250
    counts = evaluation.correlations
    assert np.abs(counts["truth"].dd - counts["real space"].dd).max() <= 2  # float32 positions at bin edges
    assert np.abs(counts["zero"].dd - counts["real space"].dd).max() > 50
    np.testing.assert_array_equal(counts["zero"].dd, counts["redshift space"].dd)
    # the one-number summary: the fraction of the redshift-space quadrupole left
    fake = {"clustering": {"real space": {"s": [10.0, 20.0], "xi2": [0.0, 0.0]}}}
    fake["clustering"]["redshift space"] = {"xi2": [-0.02, -0.01]}
    fake["clustering"]["half"] = {"xi2": [-0.01, -0.005]}
    assert quadrupole_residual(fake, "half") == pytest.approx(0.5)


def test_bad_binning_is_refused():
    with pytest.raises(ValueError, match="half the box"):
        correlation_s_mu(np.zeros((2, 3)), 100.0, [0.0, 60.0])
    with pytest.raises(ValueError, match="increase"):
        correlation_s_mu(np.zeros((2, 3)), 100.0, [10.0, 5.0])


def test_streamed_pair_counts_equal_the_materialised_ones_exactly():
    """The chunked counts (bounded memory) against every pair at once (query_pairs + histogram2d)."""
    from scipy.spatial import cKDTree

    from lss_lightning.evaluate.clustering import pair_counts

    rng = np.random.default_rng(11)
    box, n = 200.0, 3000
    pos = rng.uniform(0.0, box, (n, 3))
    pos[:40] = pos[40:80] + rng.normal(0, 0.5, (40, 3))  # close pairs, and some across the boundary
    pos = np.mod(pos, box)
    s_edges, n_mu = np.linspace(0.0, 40.0, 9), 10
    pairs = cKDTree(pos, boxsize=box).query_pairs(s_edges[-1], output_type="ndarray")
    d = pos[pairs[:, 1]] - pos[pairs[:, 0]]
    d -= box * np.round(d / box)
    s = np.sqrt((d * d).sum(axis=1))
    mu = np.minimum(np.abs(d[:, 2]) / s, 1.0)
    reference, _, _ = np.histogram2d(s, mu, bins=[s_edges, np.linspace(0, 1, n_mu + 1)])
    for per_chunk in (500, 20_000, 10**9):  # many chunks, a few, one
        streamed = pair_counts(pos, box, s_edges, n_mu, 2, method="tree", pairs_per_chunk=per_chunk)
        np.testing.assert_array_equal(streamed, reference)
    assert reference.sum() == len(pairs) > 10_000
    np.testing.assert_array_equal(
        pair_counts(pos, box, s_edges, n_mu, 2), reference
    )  # the compiled cell list


@pytest.mark.parametrize(
    ("box", "s_max", "los_axis", "spacing"),
    # 10 / 14 cells per side at 2 / 3 cells per s_max (275 of 343 neighbours kept at 3), then 4 / 6: offsets wrap
    [
        (200.0, 40.0, 2, "even"),
        (200.0, 40.0, 2, "geometric"),
        (100.0, 45.0, 0, "even"),
        (60.0, 29.0, 1, "even"),
    ],
)
def test_compiled_pair_counts_equal_the_tree_ones_exactly(box, s_max, los_axis, spacing):
    """The cell list (every cell pair once, also when a small grid wraps its neighbours onto each other) and the
    cKDTree search count the same pairs into the same bins, with points on cell edges and at the box edge, and
    pairs exactly at bin edges (points on a lattice); uneven s bins too (the bin guess is then far off)."""
    from lss_lightning.evaluate.clustering import pair_counts
    from lss_lightning.evaluate.pair_counting import cell_pair_counts

    rng = np.random.default_rng(12)
    pos = rng.uniform(0.0, box, (2500, 3))
    pos[:50] = pos[50:100] + rng.normal(0, 0.3, (50, 3))  # close pairs, some across the boundary
    lattice = np.stack(np.meshgrid(*(np.arange(0.0, box, box / 10),) * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = np.mod(np.concatenate([pos, lattice, [[0.0, 0.0, 0.0], [np.nextafter(box, 0), 0.0, 0.0]]]), box)
    s_edges = np.linspace(0.0, s_max, 7) if spacing == "even" else np.geomspace(0.5, s_max, 9)
    tree = pair_counts(pos, box, s_edges, 8, los_axis, method="tree")
    compiled = pair_counts(pos, box, s_edges, 8, los_axis)
    np.testing.assert_array_equal(compiled, tree)
    mu_edges = np.linspace(0.0, 1.0, 9)
    for refine in (2, 3):  # both cell sizes the density picks between (3: distant neighbours left out)
        np.testing.assert_array_equal(cell_pair_counts(pos, box, s_edges, mu_edges, los_axis, refine), tree)
    assert tree.sum() > 10_000 and compiled.dtype == np.int64
    with pytest.raises(ValueError, match="'compiled' or 'tree'"):
        pair_counts(pos, box, s_edges, 8, los_axis, method="kd")
