"""Coarse target levels of cold Newton fits with few rows per target (skot._multiscale)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skot import OTNetTransport, _multiscale
from skot._kernels import PowerCells


def _targets(m, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    Y = torch.rand(m, d, generator=g) * 4 - 2
    nu = torch.rand(m, generator=g) + 0.5
    return Y, nu / nu.sum()


@pytest.fixture
def small_levels(monkeypatch):
    """Coarse target levels from 80 points on (the default needs more than 2,000)."""
    monkeypatch.setattr(_multiscale, "MIN_COARSE_TARGETS", 20)


def test_levels_partition_the_points_into_weighted_barycentres():
    Y, nu = _targets(9000)
    levels = _multiscale.target_levels(Y, nu, 10**5, torch.Generator().manual_seed(0))
    sizes = [Y.shape[0]] + [level.points.shape[0] for level in levels]
    assert len(levels) == 2
    assert sizes[-1] >= _multiscale.MIN_COARSE_TARGETS
    assert sizes[-2] > _multiscale.COARSE_TARGET_FACTOR * _multiscale.MIN_COARSE_TARGETS
    points, weights = Y.double(), nu.double()
    for level in levels:
        k = level.points.shape[0]
        assert level.parent.shape == (points.shape[0],)
        # Every cluster has a member; its weight is theirs and its point their barycentre.
        assert torch.bincount(level.parent, minlength=k).min() >= 1
        mass = torch.zeros(k, dtype=torch.float64).index_add_(0, level.parent, weights)
        torch.testing.assert_close(level.weights.double(), mass, rtol=1e-6, atol=1e-9)
        centre = torch.zeros(k, Y.shape[1], dtype=torch.float64)
        centre.index_add_(0, level.parent, weights[:, None] * points)
        torch.testing.assert_close(
            level.points.double(), centre / mass[:, None], rtol=1e-5, atol=1e-5
        )
        points, weights = level.points.double(), level.weights.double()
    # The same generator state, the same levels (every rank of a distributed fit).
    again = _multiscale.target_levels(Y, nu, 10**5, torch.Generator().manual_seed(0))
    for a, b in zip(levels, again, strict=True):
        assert torch.equal(a.parent, b.parent) and torch.equal(a.points, b.points)


def test_no_levels_for_few_targets_few_rows_or_high_dimension():
    Y, nu = _targets(_multiscale.COARSE_TARGET_FACTOR * _multiscale.MIN_COARSE_TARGETS)
    g = torch.Generator().manual_seed(0)
    assert _multiscale.target_levels(Y, nu, 10**5, g) == []
    Y, nu = _targets(9000)
    assert _multiscale.target_levels(Y, nu, 4 * 9000 - 1, g) == []  # too few rows each
    assert _multiscale.target_levels(Y, nu, 4 * 9000, g)
    Y, nu = _targets(9000, d=3)
    assert _multiscale.target_levels(Y, nu, 10**5, g) == []  # only in low dimension


def _within_cluster_error(X, w, level, cell, Y, nu, h):
    """Marginal error of each cluster's rows split among its own points at heights ``h``."""
    parent = level.parent
    members = [torch.nonzero(parent == c).squeeze(1) for c in range(level.points.shape[0])]
    err = 0.0
    for c, kids in enumerate(members):
        rows = cell == c
        if not bool(rows.any()):
            continue
        pick = PowerCells(Y[kids], h[kids]).assign(X[rows])[1]
        mass = torch.zeros(kids.numel(), dtype=torch.float64)
        mass.index_add_(0, pick, w[rows].double())
        share = nu[kids].double() * (mass.sum() / nu[kids].double().sum())
        err += 0.5 * float((mass - share).abs().sum())
    return err


def test_refined_heights_share_each_cluster_by_the_weights(monkeypatch):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(4000, 2, generator=g)
    w = torch.full((4000,), 1 / 4000)
    Y, nu = _targets(400, seed=2)
    level = _multiscale._cluster(Y, nu, 100, g)
    h_coarse = -0.5 * (level.points**2).sum(1)  # a Voronoi diagram of the clusters
    cell = PowerCells(level.points, h_coarse).assign(X)[1]
    balanced = _multiscale.refine_heights(X, w, level, h_coarse, cell, Y, nu)
    monkeypatch.setattr(_multiscale, "BALANCE_ITERATIONS", 0)
    first_order = _multiscale.refine_heights(X, w, level, h_coarse, cell, Y, nu)
    before = _within_cluster_error(X, w, level, cell, Y, nu, first_order)
    after = _within_cluster_error(X, w, level, cell, Y, nu, balanced)
    assert after < 0.5 * before
    # Within each cluster the weighted mean of the heights' change is zero.
    change = torch.zeros(level.points.shape[0], dtype=torch.float64)
    change.index_add_(0, level.parent, nu.double() * (balanced - first_order).double())
    assert float(change.abs().max()) < 1e-6
    # A point alone in its cluster keeps its first-order height.
    alone = torch.bincount(level.parent)[level.parent] == 1
    torch.testing.assert_close(balanced[alone], first_order[alone])


def _fit(X, Y, **params):
    records = []
    ot = OTNetTransport(
        height="vector",
        tol=1e-2,
        max_iter=300,
        random_state=0,
        callbacks=[lambda est, r: records.append(r)],
        **params,
    ).fit(X, X_target=Y)
    return ot, records


@pytest.mark.parametrize("n", [1600, 4000])
def test_cold_fit_with_few_rows_per_target_starts_on_coarse_targets(small_levels, n):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2))
    Y = rng.uniform(-2, 2, size=(400, 2))
    ot, records = _fit(X, Y)
    assert ot.converged_ and ot.marginal_error_ <= 1e-2
    coarse = [r for r in records if not r.exact]
    assert coarse and records[0] is coarse[0]
    assert all(r.exact for r in records[len(coarse) :])  # then the whole problem
    # The map is a valid fit of the whole problem: masses from the hard cells.
    index = ot.predict_index(X)
    mass = np.bincount(index, minlength=400) / n
    assert 0.5 * np.abs(mass - 1 / 400).sum() == pytest.approx(ot.marginal_error_, abs=1e-6)


def test_warm_start_takes_no_coarse_target_level(small_levels):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1600, 2))
    Y = rng.uniform(-2, 2, size=(400, 2))
    ot, _ = _fit(X, Y, warm_start=True)
    records = []
    ot.set_params(callbacks=[lambda est, r: records.append(r)])
    ot.fit(X, X_target=Y + 0.01)
    assert records and all(r.exact for r in records)
    # The coarse levels left no schedule point: the restart takes the whole problem's.
    assert ot.converged_


def test_residual_heights_take_the_coarse_levels_too(small_levels):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1600, 2))
    Y = rng.uniform(-2, 2, size=(400, 2))
    ot = OTNetTransport(
        height="residual", hidden_layer_sizes=(16,), tol=1e-2, max_iter=300, random_state=0
    ).fit(X, X_target=Y)
    assert ot.converged_
    vector, _ = _fit(X, Y)
    assert ot.n_iter_ == vector.n_iter_
    np.testing.assert_allclose(
        ot.heights_ - ot.heights_.mean(), vector.heights_ - vector.heights_.mean(), atol=1e-4
    )
