"""Reuse: Newton and Adam solvers, warm starts on changed targets, streaming partial_fit."""

import math
import pickle
import warnings

import numpy as np
import pytest
import torch

from skot import OTNetTransport
from skot._reuse import transfer_heights

SMALL_NET = {"hidden_layer_sizes": (32, 32)}


def _data(seed=0, n=3000, m=30, d=2):
    rng = np.random.default_rng(seed)
    return rng, rng.normal(size=(n, d)), rng.uniform(-2, 2, size=(m, d))


# ----------------------------------------------------------------- solvers
@pytest.mark.parametrize("height", ["vector", "residual"])
def test_newton_and_adam_reach_the_same_map(height, device):
    rng, X, Y = _data()
    params = {"height": height, "random_state": 0, "tol": 2e-3, "device": device, **SMALL_NET}
    newton = OTNetTransport(solver="newton", **params).fit(X, X_target=Y)
    adam = OTNetTransport(solver="adam", max_iter=3000, **params).fit(X, X_target=Y)
    assert newton.converged_ and adam.converged_
    assert newton.n_iter_ < adam.n_iter_
    X_new = rng.normal(size=(5000, 2))
    agreement = np.mean(newton.predict_index(X_new) == adam.predict_index(X_new))
    assert agreement >= 0.97


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"height": "network"}, "no free per-point heights"),
        ({"height": "vector", "epsilon": 0.1}, "epsilon > 0"),
        ({"height": "residual", "bandwidth": 0.1}, "bandwidth > 0"),
    ],
)
def test_newton_refuses_what_it_cannot_solve(params, match):
    _, X, Y = _data()
    with pytest.raises(ValueError, match=match):
        OTNetTransport(solver="newton", **params).fit(X, X_target=Y)


@pytest.mark.parametrize("n", [60, 270, 600])
def test_auto_takes_newton_steps_whatever_the_samples_per_target(n):
    _, X, Y = _data(n=n)
    ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    assert ot.converged_
    assert ot._state.temperature is not None
    adam = OTNetTransport(height="vector", solver="adam", random_state=0).fit(X, X_target=Y)
    assert adam._state.temperature is None


def test_partial_fit_solves_by_newton_steps_once_enough_rows_are_kept():
    _, X, Y = _data()
    ot = OTNetTransport(height="vector", solver="auto", batch_size=4096, random_state=0)
    ot.partial_fit(X[:200], X_target=Y)  # under 10 rows per target: Adam steps
    assert ot._state.temperature is None
    ot.partial_fit(X[200:1000])  # the kept rows are enough: Newton steps on them
    assert ot._state.temperature is not None


# ------------------------------------------------------------- warm starts
@pytest.mark.parametrize("height", ["vector", "network", "residual"])
def test_warm_start_on_the_same_target_keeps_the_map(height):
    rng, X, Y = _data()
    ot = OTNetTransport(height=height, random_state=0, warm_start=True, **SMALL_NET)
    ot.fit(X, X_target=Y)
    assert ot.converged_
    X_new = rng.normal(size=(2000, 2))
    before, steps = ot.predict_index(X_new), ot.n_iter_
    ot.fit(X, X_target=Y)
    assert ot.n_iter_ == steps + 1 and ot.converged_  # one evaluation, no update
    np.testing.assert_array_equal(ot.predict_index(X_new), before)


def _heights(ot):
    with torch.no_grad():
        return ot.potential_(ot._target_t).numpy()


def test_target_ids_move_the_trained_heights_to_first_order():
    rng, X, Y = _data(n=20000)
    # Newton steps on the residuals, then the network distilled from the heights.
    ot = OTNetTransport(height="residual", random_state=0, warm_start=True)
    ids = np.arange(100, 130)
    ot.fit(X, X_target=Y, target_ids=ids)
    assert np.abs(ot.potential_.net(ot._target_t).detach().numpy()).max() > 1e-3  # trained
    h_old, bary = _heights(ot), ot._barycenters_t.numpy()
    # Independent moves with no affine part (that part keeps the heights: next test).
    dY = 0.05 * rng.normal(size=Y.shape)
    basis = np.hstack([np.ones((30, 1)), Y])
    dY -= basis @ np.linalg.lstsq(basis, dY, rcond=None)[0]
    Y2 = Y + dY
    nu = np.full(30, 1 / 30)
    by_id = pickle.loads(pickle.dumps(ot))
    by_id._change_target(Y2, nu, ids)
    moved = by_id._target_t.numpy() - ot._target_t.numpy()
    expected = h_old - (moved * bary).sum(axis=1)  # gradient of the heights: -barycentre
    np.testing.assert_allclose(_heights(by_id), expected, rtol=1e-5, atol=1e-5)
    # Shuffled rows with their ids: each point keeps its own height.
    perm = rng.permutation(30)
    shuffled = pickle.loads(pickle.dumps(ot))
    shuffled._change_target(Y2[perm], nu, ids[perm])
    np.testing.assert_allclose(_heights(shuffled), expected[perm], rtol=1e-5, atol=1e-5)
    # Without ids the moved points are new: their neighbours' expansions instead.
    by_coords = pickle.loads(pickle.dumps(ot))
    by_coords._change_target(Y2, nu, None)
    assert not np.allclose(_heights(by_coords), expected, atol=1e-4)
    # The first-order start is close: a warm start's first TV well below the cold start's.
    cold = OTNetTransport(height="residual", random_state=0).fit(X, X_target=Y2)
    n_before = len(by_id.marginal_error_curve_)
    by_id.fit(X, X_target=Y2, target_ids=ids)
    warm_start_tv = by_id.marginal_error_curve_[n_before][1]
    assert warm_start_tv < 0.5 * cold.marginal_error_curve_[0][1]


@pytest.mark.parametrize("height", ["vector", "residual"])
def test_an_affine_motion_of_the_target_keeps_the_heights(height):
    # A translated target has the same cells at the same heights: exact. A rotation and
    # scaling keep them too, far closer than the first-order expansion of every point's move
    # (the barycentre rule), whose error grows with the common move of neighbouring points.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20000, 2)) * [1.5, 0.4] + 0.3  # neither centred nor isotropic
    Y = rng.normal(size=(200, 2))
    ids = np.arange(200)
    ot = OTNetTransport(height=height, random_state=0).fit(X, X_target=Y, target_ids=ids)
    H = ot.heights_
    shifted = ot.predict_heights(Y + [0.3, -0.2], target_ids=ids)
    np.testing.assert_allclose(shifted - shifted.mean(), H - H.mean(), atol=1e-5)
    t = np.radians(3)
    R = 1.02 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = Y.mean(axis=0)
    Y2 = c + (Y - c) @ R.T + [0.05, 0.0]
    first_order = H - ((Y2 - Y) * ot.barycenters_).sum(axis=1)
    tv_kept = _tv_of_heights(X, Y2, ot.predict_heights(Y2, target_ids=ids))
    assert tv_kept < 0.5 * _tv_of_heights(X, Y2, first_order)
    # A new point of a translated target takes the height of its place before the move.
    new, t = np.array([[0.2, 0.1]]), np.array([0.3, -0.2])
    before = ot.predict_heights(np.vstack([Y, new]), target_ids=np.r_[ids, 999])
    after = ot.predict_heights(np.vstack([Y, new]) + t, target_ids=np.r_[ids, 999])
    np.testing.assert_allclose(after - after.mean(), before - before.mean(), atol=1e-5)


def test_a_warm_start_within_the_tolerance_makes_no_corrections(monkeypatch):
    # A translated target keeps its heights exactly: the carried heights are within tol by
    # their candidates, so the warm start's only work is their certified pass.
    import skot._solver

    corrections = []
    correct = skot._solver.warm_start_heights
    monkeypatch.setattr(
        skot._solver, "warm_start_heights", lambda *a: corrections.append(1) or correct(*a)
    )
    rng, X, Y = _data(n=20000)
    ids = np.arange(30)
    ot = OTNetTransport(height="vector", random_state=0, warm_start=True)
    ot.fit(X, X_target=Y, target_ids=ids)
    steps = ot.n_iter_
    ot.fit(X, X_target=Y + [0.2, -0.1], target_ids=ids)
    assert ot.converged_ and ot.n_iter_ == steps + 1 and corrections == []
    Y2, _, new_ids = _changed(rng, Y, 0.3)  # new points: corrected
    ot.fit(X, X_target=Y2, target_ids=new_ids)
    assert ot.converged_ and corrections == [1]


@pytest.mark.parametrize("height", ["vector", "residual", "network"])
@pytest.mark.parametrize("change", ["new points", "drift by id", "reweight", "reseed"])
def test_every_kind_of_target_change_converges_warm(height, change, device):
    rng, X, Y = _data(n=4000, m=40)
    ids = np.arange(40)
    ot = OTNetTransport(height=height, random_state=0, warm_start=True, device=device, **SMALL_NET)
    ot.fit(X, X_target=Y, target_ids=ids)
    nu, ids2 = None, None
    if change == "new points":
        Y2 = np.vstack([Y[4:], rng.uniform(-2, 2, size=(4, 2))])
    elif change == "drift by id":
        Y2, ids2 = Y + 0.05 * rng.normal(size=Y.shape), ids
    elif change == "reweight":
        Y2, nu = Y, rng.uniform(0.5, 1.5, size=40)
    else:
        Y2 = rng.uniform(-2, 2, size=Y.shape)
    before = ot.n_iter_
    ot.fit(X, X_target=Y2, target_weight=nu, target_ids=ids2)
    assert ot.converged_ and ot.marginal_error_ <= ot.tol and ot.n_iter_ > before
    np.testing.assert_array_equal(ot.target_, Y2)


@pytest.mark.parametrize(
    ("ids", "match"),
    [(np.arange(29), "one id per row"), (np.zeros(30), "unique"), (np.ones((30, 2)), "1-dim")],
)
def test_bad_target_ids(ids, match):
    _, X, Y = _data()
    with pytest.raises(ValueError, match=match):
        OTNetTransport(height="vector").fit(X, X_target=Y, target_ids=ids)


def test_target_ids_follow_merged_and_dropped_points():
    _, X, Y = _data()
    Y = np.vstack([Y, Y[:2]])  # two duplicates, merged into their first occurrence
    weights = np.ones(32)
    weights[5] = 0  # dropped
    ot = OTNetTransport(height="vector", random_state=0)
    ot.fit(X, X_target=Y, target_weight=weights, target_ids=np.arange(32))
    expected = np.delete(np.arange(30), 5)
    np.testing.assert_array_equal(ot._target_ids, expected)


def test_transfer_heights_is_exact_for_affine_heights():
    g = torch.Generator().manual_seed(0)
    Y_old = torch.rand(50, 3, generator=g, dtype=torch.float64)
    slope, intercept = torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64), 0.7
    h_old = intercept + Y_old @ slope
    grad = slope.expand(50, 3)
    Y_new = torch.rand(20, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        transfer_heights(Y_old, h_old, grad, Y_new), intercept + Y_new @ slope
    )
    # At an old point: that point's height, whatever the gradients.
    h_any = torch.rand(50, generator=g, dtype=torch.float64)
    grad_any = torch.rand(50, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(transfer_heights(Y_old, h_any, grad_any, Y_old[:5]), h_any[:5])


# ---------------------------------------------------------------- streaming
def _stream(X, chunk, epochs):
    for _ in range(epochs):
        for start in range(0, len(X), chunk):
            yield X[start : start + chunk]


@pytest.mark.parametrize("height", ["vector", "network"])
def test_streaming_partial_fit_matches_fit(height):
    rng, X, Y = _data(n=20000, m=20)
    full = OTNetTransport(height=height, random_state=0, **SMALL_NET).fit(X, X_target=Y)
    stream = OTNetTransport(height=height, batch_size=500, random_state=0, **SMALL_NET)
    for batch in _stream(X, chunk=2000, epochs=6):
        stream.partial_fit(batch, X_target=Y)
    X_new = rng.normal(size=(20000, 2))
    assert abs(stream.score(X_new)) <= 0.03  # fresh-sample TV of the streamed map
    agreement = np.mean(stream.predict_index(X_new) == full.predict_index(X_new))
    assert agreement >= 0.95


# ------------------------------------------------- the model's heights, at once
def _tv_of_heights(X, Y, H, nu=None):
    """Marginal error of the map ``argmax_j <x, y_j> + H_j`` on the rows of ``X`` (NumPy)."""
    cells = np.argmax(X @ Y.T + H, axis=1)
    masses = np.bincount(cells, minlength=Y.shape[0]) / X.shape[0]
    nu = np.full(Y.shape[0], 1 / Y.shape[0]) if nu is None else nu
    return 0.5 * np.abs(masses - nu).sum()


def _changed(rng, Y, share):
    """``Y`` with its first ``share`` of rows replaced by fresh draws, and ids for both."""
    k = int(share * Y.shape[0])
    Y2 = Y.copy()
    Y2[:k] = rng.normal(size=(k, Y.shape[1])) * 0.8 + 0.3
    ids = np.arange(Y.shape[0])
    new_ids = ids.copy()
    new_ids[:k] += Y.shape[0]
    return Y2, ids, new_ids


def test_network_heights_on_new_points_beat_the_nearest_point_transfer():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 8))
    Y = rng.normal(size=(200, 8)) * 0.8 + 0.3
    Y2, ids, new_ids = _changed(rng, Y, 0.1)
    tv = {}
    for height in ("residual", "vector"):  # the network's heights / the neighbours' expansions
        ot = OTNetTransport(height=height, random_state=0).fit(X, X_target=Y, target_ids=ids)
        assert ot.converged_
        tv[height] = _tv_of_heights(X, Y2, ot.predict_heights(Y2, target_ids=new_ids))
    assert tv["residual"] < 0.5 * tv["vector"]


@pytest.mark.parametrize("height", ["residual", "vector", "network"])
def test_predict_heights_on_the_training_targets_are_the_heights(height):
    _, X, Y = _data()
    ot = OTNetTransport(height=height, random_state=0, **SMALL_NET).fit(X, X_target=Y)
    np.testing.assert_allclose(ot.predict_heights(Y), ot.heights_, atol=1e-6)
    restored = pickle.loads(pickle.dumps(ot))
    Z = np.random.default_rng(1).uniform(-2, 2, size=(7, 2))
    np.testing.assert_array_equal(restored.predict_heights(Z), ot.predict_heights(Z))
    np.testing.assert_array_equal(restored.predict_heights(Y), ot.predict_heights(Y))


def test_predict_heights_follow_ids_and_check_their_input():
    _, X, Y = _data()
    ids = np.arange(30)
    ot = OTNetTransport(random_state=0).fit(X, X_target=Y, target_ids=ids)
    perm = np.random.default_rng(0).permutation(30)
    np.testing.assert_allclose(ot.predict_heights(Y[perm], ids[perm]), ot.heights_[perm])
    with pytest.raises(ValueError, match="X_target has 3 features"):
        ot.predict_heights(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="X_target"):
        ot.predict_heights([[np.nan, 0.0]])
    with pytest.raises(ValueError, match="target_ids"):
        ot.predict_heights(Y, ids[:5])
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        OTNetTransport().predict_heights(Y)


def test_distilled_network_keeps_the_map_and_learns_the_smooth_part():
    from skot._potentials import make_height_model
    from skot._reuse import distill

    gen = torch.Generator().manual_seed(0)
    Y = torch.rand(300, 2, generator=gen, dtype=torch.float32) * 4 - 2
    smooth = torch.sin(Y[:, 0]) + 0.5 * Y[:, 1] ** 2
    noise = 0.05 * torch.randn(300, generator=gen)
    model = make_height_model("residual", 2, 300, (64, 64), frequency=2.0, generator=gen)
    with torch.no_grad():
        model.residual.copy_(smooth + noise)
        before = model(Y).clone()
    distill(model, Y, gen)
    with torch.no_grad():
        torch.testing.assert_close(model(Y), before, atol=1e-5, rtol=0)
        Z = torch.rand(200, 2, generator=gen) * 4 - 2
        truth = torch.sin(Z[:, 0]) + 0.5 * Z[:, 1] ** 2
        error = (model.net(Z) - truth).abs().mean()
    assert error < 0.1 * truth.abs().mean()


def _all_candidates(X, Y, h):
    """Every row's cells by decreasing score, as a pass's candidates would list them."""
    from skot._candidates import Candidates
    from skot._kernels import PowerCells

    cells = PowerCells(Y, h)
    return Candidates(cells, X, Y.shape[0]).top_k(cells, Y.shape[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_entries_are_grouped_by_cell_in_decreasing_value(device, dtype):
    from skot._reuse import _by_cell_descending

    gen = torch.Generator().manual_seed(0)
    cell = torch.randint(0, 7, (3000,), generator=gen)
    value = torch.randn(3000, generator=gen, dtype=dtype) * 10.0 ** torch.randint(-40, 30, (3000,))
    value[:8] = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-45, -1e-45, 3.0])
    order = _by_cell_descending(cell.to(device), value.to(device)).cpu()
    c, v = cell[order], value[order].float()
    v = torch.where(torch.isnan(v), -math.inf, v)
    assert sorted(order.tolist()) == list(range(3000))
    assert bool((c[1:] >= c[:-1]).all())
    same = c[1:] == c[:-1]
    assert bool((v[1:][same] <= v[:-1][same]).all())


def test_inserted_points_hold_their_mass_against_the_others(device):
    from skot._reuse import insert_points

    gen = torch.Generator().manual_seed(0)
    X = torch.randn(4000, 2, generator=gen, dtype=torch.float64).to(device)
    Y = torch.randn(20, 2, generator=gen, dtype=torch.float64).to(device)
    h = -0.5 * (Y**2).sum(1)
    w = torch.full((4000,), 1 / 4000, dtype=torch.float64, device=device)
    nu = torch.full((20,), 1 / 20, dtype=torch.float64, device=device)
    new = torch.zeros(20, dtype=torch.bool, device=device)
    new[[3, 11]] = True
    out = insert_points(X, Y, *_all_candidates(X, Y, h), w, h, nu, new)
    assert torch.equal(out[~new], h[~new])
    old_best = (X @ Y[~new].T + h[~new]).max(dim=1).values
    for j in (3, 11):
        mass = float(w[(X @ Y[j] + out[j]) > old_best].sum())  # alone among the old points
        assert abs(mass - 1 / 20) <= 1.5 / 4000


def test_a_jacobi_sweep_gives_each_cell_its_mass_against_the_others(device):
    from skot._reuse import refit_cells

    gen = torch.Generator().manual_seed(0)
    X = torch.randn(4000, 2, generator=gen, dtype=torch.float64).to(device)
    Y = torch.randn(20, 2, generator=gen, dtype=torch.float64).to(device)
    noise = 0.3 * torch.randn(20, generator=gen, dtype=torch.float64).to(device)
    h = -0.5 * (Y**2).sum(1) + noise
    w = torch.full((4000,), 1 / 4000, dtype=torch.float64, device=device)
    nu = torch.full((20,), 1 / 20, dtype=torch.float64, device=device)
    out = refit_cells(*_all_candidates(X, Y, h), w, h, nu)
    for j in range(20):  # each with the others at their old heights
        trial = h.clone()
        trial[j] = out[j]
        mass = float(w[(X @ Y.T + trial).argmax(dim=1) == j].sum())
        assert abs(mass - 1 / 20) <= 1.5 / 4000


def test_a_warm_start_reads_the_cells_new_points_take(device):
    """New points carried in far too low (no row lists them among its candidates): once they
    are placed, the Jacobi sweep reads the rows' cells at their new heights (0.075 -> 0.054
    here; 0.075 when it read the old lists, where the rows the new points took still count in
    their old cells: in the reuse benchmark, d = 2, it raised the error and was dropped)."""
    from skot._candidates import Candidates
    from skot._kernels import PowerCells
    from skot._reuse import insert_points, warm_start_heights

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20000, 2)), rng.normal(size=(100, 2))
    ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    Xt, h = ot._to_tensor(X).to(device), ot._heights_t.clone().to(device)
    Yt = ot._target_t.clone().to(device)
    new = torch.zeros(100, dtype=torch.bool, device=device)
    new[:10] = True
    Yt[new] = ot._to_tensor(rng.normal(size=(10, 2))).to(device)
    h[new] = h.min() - 100.0
    w = torch.full((20000,), 1 / 20000, device=device)
    nu = torch.full((100,), 1 / 100, device=device)

    def error(heights):
        return _tv_of_heights(Xt.cpu().numpy(), Yt.cpu().numpy(), heights.cpu().numpy())

    candidates = Candidates(PowerCells(Yt, h), Xt, 16)
    placed = insert_points(Xt, Yt, *candidates.rescored(PowerCells(Yt, h), 16), w, h, nu, new)
    warm = warm_start_heights(Xt, Yt, *candidates.rescored(PowerCells(Yt, h), 16), w, h, nu, new)
    assert error(placed) < error(h)
    assert error(warm) < 0.8 * error(placed)


@pytest.mark.parametrize("d", [2, 8])
def test_the_damped_second_sweep_lowers_the_error_of_the_first(d):
    """Weights changed by +-20%: one Jacobi sweep overshoots where neighbouring cells answer the
    same change; the second, damped sweep of the warm start takes the error further down
    (0.055 -> 0.031 at d = 2, 0.024 -> 0.010 at d = 8)."""
    from skot._candidates import Candidates
    from skot._kernels import PowerCells
    from skot._reuse import refit_cells, warm_start_heights

    rng = np.random.default_rng(d)
    X, Y = rng.normal(size=(20000, d)), rng.normal(size=(200, d))
    ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    Xt, Yt, h = ot._to_tensor(X), ot._target_t, ot._heights_t
    w = torch.full((20000,), 1 / 20000)
    nu = torch.as_tensor(1 + 0.2 * rng.choice([-1.0, 1.0], size=200), dtype=torch.float32)
    nu /= nu.sum()

    def error(heights):
        return _tv_of_heights(Xt.numpy(), Yt.numpy(), heights.numpy(), nu.numpy())

    candidates = Candidates(PowerCells(Yt, h), Xt, 16)
    once = refit_cells(*candidates.rescored(PowerCells(Yt, h), 16), w, h, nu)
    new = torch.zeros(200, dtype=torch.bool)
    warm = warm_start_heights(Xt, Yt, *candidates.rescored(PowerCells(Yt, h), 16), w, h, nu, new)
    assert error(once) < error(h)
    assert error(warm) < 0.9 * error(once)


@pytest.mark.parametrize("change", [0.1, 0.5])
def test_warm_start_ends_no_worse_than_it_starts_and_beats_a_cold_start(change):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 2))
    Y = rng.normal(size=(150, 2)) * 0.8 + 0.3
    Y2, ids, new_ids = _changed(rng, Y, change)
    ot = OTNetTransport(random_state=0, warm_start=True).fit(X, X_target=Y, target_ids=ids)
    n_before = len(ot.marginal_error_curve_)
    ot.fit(X, X_target=Y2, target_ids=new_ids)
    errors = [e for _, e in ot.marginal_error_curve_[n_before:]]
    assert ot.converged_ and ot.marginal_error_ <= errors[0]
    cold = OTNetTransport(random_state=0).fit(X, X_target=Y2)
    assert errors[0] < cold.marginal_error_curve_[0][1]


def test_distillation_of_targets_the_network_cannot_tell_apart():
    """Two targets that coincide after the standardisation (source at 1e8, targets near 0)
    give the network the same features: the distillation learns nothing and the fit ends
    normally (it raised a singular-matrix error from inside torch)."""
    X = np.array([[1e8], [99999999.9]])
    Y = np.array([[0.12573022], [-0.13210486]])
    ot = OTNetTransport(
        height="residual", hidden_layer_sizes=(4,), max_iter=4, fourier_scale=0.0, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ot.fit(X, X_target=Y)
    assert np.isfinite(ot.heights_).all()


def test_warm_start_keeps_the_candidates_only_when_asked():
    """The last Newton pass's candidates stay in memory with ``warm_start=True`` only (a
    reference to the training rows and 16 cells per row), and not in a pickle."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(3000, 2)), rng.normal(size=(60, 2))
    assert OTNetTransport(random_state=0).fit(X, X_target=Y)._state.candidates is None
    ot = OTNetTransport(random_state=0, warm_start=True).fit(X, X_target=Y)
    assert ot._state.candidates is not None
    restored = pickle.loads(pickle.dumps(ot))
    assert restored._state.candidates is None
    Y2, ids, new_ids = _changed(rng, Y, 0.1)
    restored.fit(X, X_target=Y2, target_ids=new_ids)  # a full pass instead: still converges
    assert restored.converged_


@pytest.mark.parametrize("change", ["10% replaced", "weights", "drift", "other rows"])
def test_warm_start_on_the_same_rows_makes_no_full_pass(change, monkeypatch):
    """A refit on the same rows after a small change of target starts from the kept
    candidates (carried over to the new target): no full top-k pass over the sample, the
    same quality; on other rows, a full pass."""
    from skot import _candidates

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 3))
    Y = rng.normal(size=(200, 3)) * 0.8 + 0.3
    ids, weights = np.arange(200), None
    ot = OTNetTransport(random_state=0, warm_start=True).fit(X, X_target=Y, target_ids=ids)
    X2, Y2, new_ids = X, Y, ids
    if change == "10% replaced":
        Y2, _, new_ids = _changed(rng, Y, 0.1)
    elif change == "weights":
        weights = 1 + 0.2 * rng.choice([-1.0, 1.0], size=200)
        weights /= weights.sum()
    elif change == "drift":
        Y2 = Y + 1e-3 * rng.normal(size=Y.shape)
    else:
        X2, weights = rng.normal(size=X.shape), np.full(200, 1 / 200)
    full = []
    refresh = _candidates.Candidates._refresh_all
    monkeypatch.setattr(
        _candidates.Candidates,
        "_refresh_all",
        lambda self, cells: (full.append(1), refresh(self, cells))[1],
    )
    ot.fit(X2, X_target=Y2, target_weight=weights, target_ids=new_ids)
    assert ot.converged_
    assert len(full) == (1 if change == "other rows" else 0)
    cold = OTNetTransport(random_state=0).fit(X2, X_target=Y2, target_weight=weights)
    assert ot.marginal_error_ <= max(cold.marginal_error_, ot.tol)


def test_warm_start_corrections_never_make_the_start_worse():
    """The new-point insertion and the Jacobi sweep are heuristics: the first evaluation of a
    warm fit is at most the error of the carried-over heights themselves (on this mixture the
    corrections alone raised it from 0.62 to 0.82)."""
    rng = np.random.default_rng(0)
    means = np.array([[1.2, 0.0], [-0.6, 1.0], [-0.6, -1.0]])

    def mixture(k):
        return means[rng.integers(0, 3, size=k)] + 0.5 * rng.standard_normal(size=(k, 2))

    X, Y = rng.normal(size=(20000, 2)), mixture(200)
    Y2, ids = np.vstack([Y[20:], mixture(20)]), np.arange(200)
    new_ids = np.r_[ids[20:], 200 + ids[:20]]
    ot = OTNetTransport(random_state=0, warm_start=True).fit(X, X_target=Y, target_ids=ids)
    carried = _tv_of_heights(X, Y2, ot.predict_heights(Y2, target_ids=new_ids))
    n_before = len(ot.marginal_error_curve_)
    ot.fit(X, X_target=Y2, target_ids=new_ids)
    assert ot.marginal_error_curve_[n_before][1] <= carried + 1e-3


def test_refused_corrections_leave_the_carried_heights_and_their_exact_error(monkeypatch):
    """Corrections worse than the carried heights (here a large random shake) are refused:
    the warm fit's first evaluation is the exact marginal error of the carried heights."""
    import skot._solver as solver

    def shaken(X, Y, vals, idx, w, h, nu, new):
        g = torch.Generator(device=h.device).manual_seed(0)
        return h + 5.0 * torch.randn(h.shape, generator=g, dtype=h.dtype, device=h.device)

    monkeypatch.setattr(solver, "warm_start_heights", shaken)
    rng, X, Y = _data(seed=3, n=4000, m=40)
    ids = np.arange(40)
    Y2, new_ids = np.vstack([Y[4:], rng.uniform(-2, 2, size=(4, 2))]), np.r_[ids[4:], 40 + ids[:4]]
    ot = OTNetTransport(random_state=0, warm_start=True).fit(X, X_target=Y, target_ids=ids)
    carried = _tv_of_heights(X, Y2, ot.predict_heights(Y2, target_ids=new_ids))
    n_before = len(ot.marginal_error_curve_)
    ot.fit(X, X_target=Y2, target_ids=new_ids)
    assert ot.marginal_error_curve_[n_before][1] == pytest.approx(carried, abs=1e-6)  # float32


@pytest.mark.parametrize("shape", [(300, 40), (40, 300), (300, 40, 10)])
def test_gcv_from_the_gram_matrix_equals_the_svd_scores(shape):
    # _gcv takes the squared singular values from the Gram matrix of the smaller side; the
    # scores and the chosen penalty are those of the SVD, also for a rank-deficient P
    # (third case: rank 10).
    from skot._reuse import DISTILL_RIDGES, _gcv

    gen = torch.Generator().manual_seed(0)
    n, p = shape[:2]
    if len(shape) == 3:
        P = torch.randn(n, shape[2], generator=gen, dtype=torch.float64)
        P = P @ torch.randn(shape[2], p, generator=gen, dtype=torch.float64)
    else:
        P = torch.randn(n, p, generator=gen, dtype=torch.float64)
    c = P @ torch.randn(p, generator=gen, dtype=torch.float64)
    c = c + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    U, S, _ = torch.linalg.svd(P, full_matrices=False)
    Uc, s2 = U.T @ c, S**2
    outside = float(c @ c - Uc @ Uc)
    expected = []
    for ridge in DISTILL_RIDGES:
        shrink = ridge * float(s2.mean()) / (s2 + ridge * float(s2.mean()))
        residual = outside + float(((shrink * Uc) ** 2).sum())
        dof = float((1 - shrink).sum())
        expected.append((residual / max(n - dof, 1.0) ** 2, ridge))
    score, ridge = _gcv(P, c)
    best = min(expected)
    assert ridge == best[1]
    assert score == pytest.approx(best[0], rel=1e-6, abs=1e-12 * float(c @ c))
