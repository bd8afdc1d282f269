"""OTNetTransport: exactness against ground truth, invariants, devices, persistence, errors."""

import io
import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from skot import OTNetTransport

HEIGHTS = ["vector", "network", "residual"]
SMALL_NET = {"hidden_layer_sizes": (64, 64)}


def _power_problem(d, m, n, seed):
    """A target and heights chosen first; the source sampled; the true map known."""
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(m, d))
    h = -0.5 * (Y**2).sum(1) + 0.3 * rng.normal(size=m)
    X = rng.normal(size=(n, d))
    labels = np.argmax(X @ Y.T + h, axis=1)
    nu = np.bincount(labels, minlength=m) / n
    return rng, X, Y, h, nu


# ----------------------------------------------------------------- ground truth
@pytest.mark.parametrize("height", HEIGHTS)
@pytest.mark.parametrize(("d", "min_agreement"), [(2, 0.99), (8, 0.98)])
def test_recovers_a_known_power_map(height, d, min_agreement, device):
    rng, X, Y, h, nu = _power_problem(d, m=100, n=20_000, seed=d)
    ot = OTNetTransport(height=height, tol=3e-3, device=device, random_state=0, **SMALL_NET)
    ot.fit(X, X_target=Y, target_weight=nu)
    fresh = rng.normal(size=(20_000, d))
    truth = Y[np.argmax(fresh @ Y.T + h, axis=1)]
    agreement = np.mean(np.all(ot.transform(fresh) == truth, axis=1))
    assert agreement >= min_agreement
    assert ot.converged_ and ot.marginal_error_ <= 3e-3


@pytest.mark.parametrize("height", HEIGHTS)
@pytest.mark.parametrize(("n", "d"), [(40, 2), (60, 5)])
def test_uniform_n_equals_m_is_the_exact_assignment(height, n, d):
    rng = np.random.default_rng(n + d)
    X = rng.uniform(size=(n, d))
    Y = rng.normal(size=(n, d))
    cost = ((X[:, None] - Y[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    ot = OTNetTransport(height=height, tol=0.5 / n, max_iter=3000, random_state=0, **SMALL_NET)
    idx = ot.fit(X, X_target=Y).predict_index(X)
    assert sorted(idx) == list(range(n))  # a permutation: every target gets exactly one point
    assert cost[np.arange(n), idx].sum() <= 1.005 * cost[rows, cols].sum()


@pytest.mark.parametrize("height", HEIGHTS)
def test_every_height_reaches_one_percent_with_500_targets(height):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(20_000, 2))
    Y = rng.uniform(-1.5, 2.5, size=(500, 2))
    ot = OTNetTransport(height=height, tol=1e-2, random_state=0).fit(X, X_target=Y)
    masses = np.bincount(ot.predict_index(X), minlength=500) / len(X)
    tv = 0.5 * np.abs(masses - 1 / 500).sum()
    assert tv < 1e-2
    assert ot.converged_ and ot.marginal_error_ == pytest.approx(tv, rel=1e-5)


# ------------------------------------------------------------------ invariants
def test_heights_in_input_units_give_the_map(rng):
    X = rng.normal(loc=50, scale=20, size=(3000, 3))
    Y = rng.normal(loc=-10, scale=5, size=(30, 3))
    ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    Z = rng.normal(loc=50, scale=20, size=(500, 3))
    idx = np.argmax(Z @ ot.target_.T + ot.heights_, axis=1)
    np.testing.assert_array_equal(ot.predict_index(Z), idx)
    np.testing.assert_array_equal(ot.transform(Z), Y[idx])
    assert ot.heights_ @ ot.target_weight_ == pytest.approx(0, abs=1e-6 * np.abs(ot.heights_).max())


def test_inverse_transform_returns_cell_barycentres(rng):
    X = rng.normal(size=(2000, 2))
    Y = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [50.0, 50.0]])
    ot = OTNetTransport(height="vector", tol=0.02, random_state=0)
    ot.fit(X, X_target=Y, target_weight=[0.3, 0.3, 0.4, 0.0])  # zero weight: dropped
    assert ot.target_.shape == (3, 2)
    idx = ot.predict_index(X)
    expected = np.stack([X[idx == j].mean(0) for j in range(3)])
    np.testing.assert_allclose(ot.inverse_transform(ot.target_), expected, rtol=1e-5)
    # off-target points use their nearest target's cell
    np.testing.assert_allclose(ot.inverse_transform(Y[:3] + 0.1), expected, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")  # a rough map: 2 steps, few rows per cell
def test_cell_queries_of_the_fitted_diagram(rng):
    # The private queries that skot.da asks of a fitted map: nearest target points (no pass
    # for the target points themselves), each cell's occupancy and the row closest to entering
    # an empty one.
    from skot._cells import nearest_rows

    X, Y = rng.normal(size=(300, 3)), rng.normal(size=(40, 3)) + 4.0
    ot = OTNetTransport(height="vector", max_iter=2, random_state=0).fit(X, X_target=Y)
    np.testing.assert_array_equal(ot._nearest_target(Y), np.arange(40))
    np.testing.assert_array_equal(ot._nearest_target(Y[::-1]), nearest_rows(Y[::-1], Y))
    np.testing.assert_array_equal(ot._nearest_target(Y[::-1]), np.arange(40)[::-1])
    cells = np.array([0, 5, 5, 39, 12])
    inside, rows = ot._cell_entries(X[:30], cells)  # 30 rows leave cells empty
    occupied = np.bincount(ot.predict_index(X[:30]), minlength=40) > 0
    np.testing.assert_array_equal(inside, occupied[cells])
    assert (~inside).any() and (rows[inside] == -1).all()
    np.testing.assert_array_equal(rows[~inside], ot._closest_to_enter(X[:30], cells[~inside]))


def test_identity_when_no_target_and_duplicates_are_merged(rng):
    X = rng.normal(size=(50, 3))
    ot = OTNetTransport(random_state=0).fit(X)
    np.testing.assert_array_equal(ot.transform(X), X)
    ot = OTNetTransport(height="vector", random_state=0)
    ot.fit(X[:10], X_target=np.vstack([X[:5], X[:5]]))
    assert ot.target_.shape == (5, 3)
    np.testing.assert_allclose(ot.target_weight_, 0.2)


def test_translation_and_scale_equivariance(rng):
    X = rng.normal(size=(4000, 2))
    Y = rng.normal(size=(40, 2)) + [2.0, 0.0]
    a = OTNetTransport(height="vector", tol=3e-3, random_state=0).fit(X, X_target=Y)
    b = OTNetTransport(height="vector", tol=3e-3, random_state=0)
    b.fit(1000 * X + 7, X_target=1000 * Y + 7)
    Z = rng.normal(size=(5000, 2))
    agree = np.mean(a.predict_index(Z) == b.predict_index(1000 * Z + 7))
    assert agree > 0.98


def test_weighted_source_equals_repeated_source(rng):
    X = rng.normal(size=(300, 2))
    Y = rng.normal(size=(10, 2))
    reps = rng.integers(1, 4, size=300)
    a = OTNetTransport(height="vector", tol=5e-3, random_state=0)
    a.fit(X, X_target=Y, sample_weight=reps)
    b = OTNetTransport(height="vector", tol=5e-3, random_state=0)
    b.fit(np.repeat(X, reps, axis=0), X_target=Y)
    for ot, w in ((a, reps), (b, reps)):
        masses = np.bincount(ot.predict_index(X), weights=w, minlength=10) / w.sum()
        assert 0.5 * np.abs(masses - 0.1).sum() <= 5e-3


def test_entropic_map_is_a_smooth_mean_of_targets(rng):
    X = rng.normal(size=(3000, 2))
    Y = np.array([[-1.0, 0.0], [1.0, 0.0]])
    ot = OTNetTransport(height="vector", epsilon=0.5, random_state=0).fit(X, X_target=Y)
    out = ot.transform(np.array([[-3.0, 0.0], [0.0, 0.0], [3.0, 0.0]]))
    assert out[0, 0] < -0.9 and abs(out[1, 0]) < 0.2 and out[2, 0] > 0.9
    assert np.all(np.abs(out[:, 0]) < 1) and np.allclose(out[:, 1], 0)
    assert ot.converged_


def test_entropic_map_in_input_units(rng):
    # Standardisation is public: the soft map is the softmax of the input-unit scores at
    # temperature epsilon * scale_**2 (what POT calls reg_e / 2 for the squared distance).
    X = rng.normal(size=(2000, 2)) * 5 + 3
    Y = rng.normal(size=(15, 2)) * 2 - 1
    ot = OTNetTransport(height="vector", epsilon=0.2, random_state=0).fit(X, X_target=Y)
    np.testing.assert_allclose(ot.center_, X.mean(axis=0))
    assert ot.scale_ > 1
    Z = rng.normal(size=(50, 2)) * 5 + 3
    s = (Z @ ot.target_.T + ot.heights_) / (ot.epsilon * ot.scale_**2)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    expected = (p / p.sum(axis=1, keepdims=True)) @ ot.target_
    np.testing.assert_allclose(ot.transform(Z), expected, rtol=1e-6, atol=1e-6)


def test_kernel_smoothed_source(rng):
    X = rng.normal(size=(500, 2))
    Y = rng.normal(size=(20, 2))
    ot = OTNetTransport(height="vector", bandwidth=0.3, tol=0.03, max_iter=3000, random_state=0)
    ot.fit(X, X_target=Y)
    assert ot.converged_
    fresh = X[rng.integers(0, 500, 200_000)] + 0.3 * ot.scale_ * rng.normal(size=(200_000, 2))
    assert -ot.score(fresh) < 0.04


def test_score_is_negative_marginal_error(rng):
    X = rng.normal(size=(5000, 2))
    Y = rng.normal(size=(20, 2))
    ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    assert ot.score(X) == pytest.approx(-ot.marginal_error_)
    assert ot.score(rng.normal(size=(5000, 2)) + 3) < ot.score(rng.normal(size=(5000, 2)))


# ------------------------------------------------------- fitting behaviour
def test_same_seed_same_result(rng, device):
    X = rng.normal(size=(5000, 2))
    Y = rng.normal(size=(50, 2))
    kw = {"batch_size": 512, "random_state": 3, "device": device, **SMALL_NET}
    a = OTNetTransport(**kw).fit(X, X_target=Y)
    b = OTNetTransport(**kw).fit(X, X_target=Y)
    np.testing.assert_array_equal(a.heights_, b.heights_)
    assert a.loss_curve_ == b.loss_curve_


def test_convergence_warning_and_curves(rng):
    X = rng.normal(size=(5000, 2))
    Y = rng.normal(size=(200, 2))
    ot = OTNetTransport(max_iter=3, tol=1e-4, random_state=0, **SMALL_NET)
    with pytest.warns(ConvergenceWarning, match="stopped after 3 iterations"):
        ot.fit(X, X_target=Y)
    assert not ot.converged_ and ot.n_iter_ == 3
    assert len(ot.loss_curve_) == 3 and len(ot.marginal_error_curve_) >= 1


def test_partial_fit_continues_and_never_reinitialises(rng):
    X = rng.normal(size=(4000, 2))
    Y = rng.normal(size=(30, 2))
    # A network: Adam steps, one per batch of the chunk (free heights solve their buffered
    # rows by Newton steps instead, see test_stream).
    ot = OTNetTransport(height="network", batch_size=1000, random_state=0, **SMALL_NET)
    ot.partial_fit(X, X_target=Y)
    assert ot.n_iter_ == 4
    errors = [ot.marginal_error_]
    for _ in range(30):
        ot.partial_fit(X)
        errors.append(ot.marginal_error_)
    assert ot.n_iter_ > 4 and errors[-1] < errors[0]
    with pytest.raises(ValueError, match="features"):
        ot.partial_fit(rng.normal(size=(100, 3)))


def test_warm_start_continues_from_the_previous_solution(rng):
    X = rng.normal(size=(3000, 2))  # 100 samples per cell: TV can reach 0
    Y = rng.normal(size=(30, 2))
    ot = OTNetTransport(height="vector", tol=1e-3, warm_start=True, random_state=0)
    ot.fit(X, X_target=Y)
    first = ot.n_iter_
    ot.fit(X, X_target=Y)  # already converged: one evaluation step
    assert ot.n_iter_ == first + 1 and ot.converged_
    cold = OTNetTransport(height="vector", tol=1e-3, random_state=0).fit(X, X_target=Y)
    assert cold.n_iter_ == first


def test_verbose_prints_one_line_per_evaluation(rng, capsys):
    X = rng.normal(size=(500, 2))
    OTNetTransport(height="vector", random_state=0).fit(X, X_target=X[:20])
    assert capsys.readouterr().out == ""
    ot = OTNetTransport(height="vector", verbose=1, random_state=0).fit(X, X_target=X[:20])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(ot.marginal_error_curve_)
    assert lines[-1].startswith(f"Iteration {ot.n_iter_},") and "marginal error" in lines[-1]


def test_divergence_raises_instead_of_returning_nan(rng):
    X = rng.normal(size=(500, 2))
    ot = OTNetTransport(height="vector", solver="adam", height_learning_rate=1e300, random_state=0)
    with pytest.raises(ValueError, match="diverged"):
        ot.fit(X, X_target=X[:20])


def test_metadata_routing_requests_x_target_by_default():
    routing = OTNetTransport().get_metadata_routing()
    assert routing.fit.requests["X_target"] is True
    assert routing.partial_fit.requests["X_target"] is True


# ------------------------------------------------------- devices & persistence
def test_device_resolution(device):
    ot = OTNetTransport(device=device, height="vector", random_state=0)
    X = np.random.default_rng(0).normal(size=(100, 2))
    ot.fit(X, X_target=X[:10])
    assert ot.device_.type == device
    auto = OTNetTransport(device="auto").fit(X)
    assert auto.device_.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("height", HEIGHTS)
def test_pickle_round_trip_keeps_map_and_training(height, rng, device):
    X = rng.normal(size=(2000, 2))
    Y = rng.normal(size=(25, 2))
    ot = OTNetTransport(height=height, batch_size=500, device=device, random_state=0, **SMALL_NET)
    ot.partial_fit(X, X_target=Y)
    restored = pickle.loads(pickle.dumps(ot))
    Z = rng.normal(size=(300, 2))
    np.testing.assert_array_equal(restored.transform(Z), ot.transform(Z))
    ot.partial_fit(X)
    restored.partial_fit(X)
    np.testing.assert_allclose(restored.heights_, ot.heights_, rtol=1e-6, atol=1e-6)
    assert clone(ot).get_params() == ot.get_params()


def test_cuda_fitted_estimator_unpickles_on_cpu(rng, monkeypatch):
    """A state saved from CUDA loads on a machine without it, with a warning.

    Without a GPU the CUDA side is simulated by relabelling the pickled device; the state
    itself is always saved with CPU tensors, which is what makes this work.
    """
    X = rng.normal(size=(500, 2))
    ot = OTNetTransport(height="network", random_state=0, **SMALL_NET).fit(X, X_target=X[:20])
    state = ot.__getstate__()
    assert all(t.device.type == "cpu" for t in state["_state"]["model"].state_dict().values())
    state["device_"] = "cuda:0"
    state["_state"]["generator"]["device"] = "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    blob = io.BytesIO()
    pickle.dump(state, blob)
    restored = OTNetTransport.__new__(OTNetTransport)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        restored.__setstate__(pickle.loads(blob.getvalue()))
    assert restored.device_.type == "cpu"
    np.testing.assert_array_equal(restored.transform(X), ot.transform(X))
    restored.partial_fit(X)  # trains on, with a reseeded generator


# ------------------------------------------------------------------ bad input
@pytest.fixture
def data(rng):
    return rng.normal(size=(50, 3)), rng.normal(size=(10, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"X_target": np.full((10, 3), np.nan)}, "X_target.*NaN"),
        ({"X_target": np.full((10, 3), np.inf)}, "X_target.*infinity"),
        ({"X_target": np.zeros((10, 2))}, "X_target has 2 features, but X has 3"),
        ({"X_target": np.zeros(3)}, "Expected 2D array"),
        ({"X_target": np.zeros((0, 3))}, "0 sample"),
        ({"X_target": np.ones((4, 3))}, "at least 2 distinct points"),
        ({"X_target": np.ones((1, 3))}, "at least 2 distinct points"),
        ({"X_target": np.array([["a", "b", "c"]] * 3)}, "X_target"),
        ({"sample_weight": -np.ones(50)}, "sample_weight must be non-negative"),
        ({"sample_weight": np.zeros(50)}, "sample_weight must not be all zero"),
        ({"sample_weight": np.ones(49)}, "sample_weight has 49 entries but 50"),
        ({"sample_weight": np.ones((50, 2))}, "sample_weight must be 1-dimensional"),
        ({"sample_weight": np.r_[np.nan, np.ones(49)]}, "sample_weight.*NaN"),
        ({"target_weight": np.ones(9)}, "target_weight has 9 entries but 10"),
        ({"target_weight": -np.ones(10)}, "target_weight must be non-negative"),
        ({"target_weight": np.zeros(10)}, "target_weight must not be all zero"),
    ],
)
def test_bad_fit_input_names_the_argument(data, kwargs, match):
    X, Y = data
    kwargs = {"X_target": Y, **kwargs}
    with pytest.raises(ValueError, match=match):
        OTNetTransport(height="vector").fit(X, **kwargs)


@pytest.mark.parametrize(
    ("X", "error", "match"),
    [
        (np.full((50, 3), np.nan), ValueError, "Input X contains NaN"),
        (np.zeros((0, 3)), ValueError, "0 sample"),
        (np.zeros((1, 3)), ValueError, "1 sample"),
        (np.zeros(3), ValueError, "Expected 2D array"),
        (np.zeros((50, 3)) + 1j, ValueError, "[Cc]omplex"),
        (sp.random(50, 3, density=0.5, format="csr"), TypeError, "[Ss]parse"),
    ],
)
def test_bad_source_is_rejected(data, X, error, match):
    with pytest.raises(error, match=match):
        OTNetTransport(height="vector").fit(X, X_target=data[1])


def test_bad_transform_input(data):
    X, Y = data
    ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    with pytest.raises(ValueError, match="3 features"):
        ot.transform(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        ot.transform(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="3 features"):
        ot.inverse_transform(np.zeros((5, 4)))
    with pytest.raises(NotFittedError):
        OTNetTransport().transform(X)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ({"device": "nonsense:x"}, "device must be"),
        ({"height": "tree"}, "'height' parameter"),
        ({"learning_rate": 0}, "'learning_rate' parameter"),
        ({"tol": -1}, "'tol' parameter"),
        ({"init": "random"}, "'init' parameter"),
    ],
)
def test_bad_parameters(data, params, match):
    with pytest.raises(ValueError, match=match):
        OTNetTransport(**params).fit(data[0], X_target=data[1])


def test_cuda_requested_without_cuda(data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' was requested but CUDA is not available"):
        OTNetTransport(device="cuda").fit(data[0], X_target=data[1])


def test_no_warning_on_a_clean_fit(data):
    X, Y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)


@pytest.mark.parametrize("change", ["add", "remove", "move", "reweight"])
def test_warm_start_on_a_changed_target_gives_a_valid_map(change, rng):
    X = rng.normal(size=(3000, 2))
    Y = rng.uniform(-2, 2, size=(30, 2))
    ot = OTNetTransport(height="residual", warm_start=True, random_state=0, **SMALL_NET)
    ot.fit(X, X_target=Y)
    with torch.no_grad():
        corrections = ot.potential_.correction(ot._target_t).numpy()
    residual = dict(zip(map(tuple, ot.target_), corrections, strict=True))
    nu = None
    if change == "add":
        Y2 = np.vstack([Y, rng.uniform(-2, 2, size=(3, 2))])
    elif change == "remove":
        Y2 = Y[:-3]
    elif change == "move":
        Y2 = Y + 0.05 * rng.normal(size=Y.shape)
    else:
        Y2, nu = Y, np.r_[np.full(15, 2.0), np.ones(15)]
    if change in ("add", "remove"):  # persisting points keep their trained corrections
        probe = pickle.loads(pickle.dumps(ot))
        weights = np.full(len(Y2), 1 / len(Y2))
        probe._change_target(Y2, weights, None)
        with torch.no_grad():
            start = probe.potential_.correction(probe._target_t).numpy()
        old = np.array([tuple(y) in residual for y in Y2])
        expected = [residual[tuple(y)] for y in Y2[old]]
        np.testing.assert_allclose(start[old], expected, rtol=1e-5, atol=1e-6)
        assert np.isfinite(start).all()
    before = ot.n_iter_
    ot.fit(X, X_target=Y2, target_weight=nu)
    assert ot.n_iter_ > before and ot.converged_ and ot.marginal_error_ <= ot.tol
    assert ot.target_.shape == (len(Y2), 2)


@pytest.mark.parametrize("solver", ["newton", "adam"])
def test_fitted_attributes_agree_with_predict_index(device, solver):
    """marginal_error_ and barycenters_ describe the cells predict_index gives the training
    sample, whether or not they were taken from the solver's last pass (Newton steps)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 2))
    Y = rng.uniform(-2, 2, size=(40, 2))
    est = OTNetTransport(height="vector", solver=solver, max_iter=30, random_state=0, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # Adam: not converged, no matter
        est.fit(X, X_target=Y)
    idx = est.predict_index(X)
    counts = np.bincount(idx, minlength=40) / 3000
    assert est.marginal_error_ == pytest.approx(0.5 * np.abs(counts - 1 / 40).sum(), abs=1e-6)
    for j in np.flatnonzero(counts):
        np.testing.assert_allclose(est.barycenters_[j], X[idx == j].mean(0), rtol=1e-5, atol=1e-5)


def test_convergence_warning_explains_the_assignment_regime():
    rng = np.random.default_rng(6)
    X, Y = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    with pytest.warns(ConvergenceWarning, match="1 samples per target .* assignment"):
        OTNetTransport(height="vector", max_iter=3, random_state=0).fit(X, X_target=Y)
    # Many samples per target: the plain message.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        OTNetTransport(height="vector", max_iter=1, random_state=0).fit(
            rng.normal(size=(3000, 2)), X_target=Y[:30]
        )
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert messages and "assignment" not in messages[0]


def test_a_2d_y_in_fit_points_to_x_target(rng):
    X, Y = rng.normal(size=(200, 2)), rng.normal(size=(20, 2))
    for method in ("fit", "partial_fit"):
        with pytest.raises(ValueError, match="X_target=Y"):
            getattr(OTNetTransport(), method)(X, Y)
    OTNetTransport(max_iter=5).fit(X, np.zeros(200), X_target=Y)  # a 1-D y is still ignored


def test_auto_solver_takes_newton_steps_at_one_sample_per_target():
    # As many samples as targets: "auto" takes the same Newton steps as "newton" and reaches
    # tol=1e-2 in a few tens of steps (Adam steps needed hundreds, or stalled above it).
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(400, 2)), rng.normal(size=(400, 2)) * 0.8 + 0.5
    fits = {
        solver: OTNetTransport(height="vector", solver=solver, tol=1e-2, random_state=0).fit(
            X, X_target=Y
        )
        for solver in ("auto", "newton")
    }
    assert fits["auto"].converged_ and fits["auto"].n_iter_ <= 60
    assert fits["auto"].n_iter_ == fits["newton"].n_iter_
    np.testing.assert_array_equal(fits["auto"].heights_, fits["newton"].heights_)
