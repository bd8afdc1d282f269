"""Bad input caught up front (issue 19), and what an error or an interruption leaves behind.

Each case the fuzzer (tests/test_fuzz.py) found is pinned here by a plain test.
"""

import itertools
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

import skot
from skot import OTNetSampler, OTNetTransport
from skot._validation import marginal_error_floor, source_atoms
from skot.exceptions import AtomicSourceWarning, DataRangeError, DivergenceError

QUICK = {"height": "vector", "max_iter": 30, "tol": 0.2, "random_state": 0}


def _fitted_state(est) -> dict:
    """Everything a failed call must leave as it was."""
    state = {"params": est.get_params(), "dict_keys": sorted(est.__dict__)}
    for name in ("heights_", "target_", "target_weight_", "barycenters_", "center_"):
        state[name] = np.array(getattr(est, name), copy=True)
    for name in ("n_iter_", "scale_", "marginal_error_", "converged_", "n_features_in_"):
        state[name] = getattr(est, name)
    state["loss_curve_"] = list(est.loss_curve_)
    state["step"] = est._state.step
    state["model"] = {k: v.clone() for k, v in est._state.model.state_dict().items()}
    return state


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == "model":
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), name
        elif isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


# ------------------------------------------------------------ 1. hidden_layer_sizes
@pytest.mark.parametrize("height", ["network", "vector"])
@pytest.mark.parametrize("sizes", [(0,), (16, 0), (-3,), (2.5,), (True,), ("8",), [[4]]])
def test_hidden_layer_sizes_must_be_positive_integers(height, sizes, rng):
    X = rng.normal(size=(50, 2))
    with pytest.raises(ValueError, match=r"hidden_layer_sizes must be a tuple of positive int"):
        OTNetTransport(height=height, hidden_layer_sizes=sizes).fit(X)


@pytest.mark.parametrize("sizes", [(8,), [8, 4], np.array([8]), (np.int64(4),), ()])
def test_hidden_layer_sizes_accepts_sequences_of_positive_ints(sizes, rng):
    X = rng.normal(size=(50, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ot = OTNetTransport(hidden_layer_sizes=sizes, max_iter=3, random_state=0).fit(X)
    assert np.isfinite(ot.heights_).all()


def test_hidden_layer_sizes_error_names_the_value(rng):
    with pytest.raises(ValueError, match=r"got \(0,\)"):
        OTNetTransport(hidden_layer_sizes=(0,)).fit(rng.normal(size=(20, 2)))


# ------------------------------------------------------------------- 2. torch.device
def test_device_accepts_a_torch_device(rng):
    X = rng.normal(size=(60, 2))
    ot = OTNetTransport(device=torch.device("cpu"), **QUICK).fit(X, X_target=X[:6])
    assert ot.device_ == torch.device("cpu")
    assert ot.get_params()["device"] == torch.device("cpu")
    twin = clone(ot)
    assert twin.get_params()["device"] == torch.device("cpu")
    twin.fit(X, X_target=X[:6])
    np.testing.assert_array_equal(twin.heights_, ot.heights_)
    restored = pickle.loads(pickle.dumps(ot))
    np.testing.assert_array_equal(restored.transform(X), ot.transform(X))


def test_a_cuda_torch_device_without_cuda_is_a_clear_error(rng, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="was requested but CUDA is not available"):
        OTNetTransport(device=torch.device("cuda")).fit(rng.normal(size=(20, 2)))


@pytest.mark.parametrize("device", [3, torch.device("meta"), None])
def test_other_devices_are_refused(device, rng):
    with pytest.raises(ValueError, match="device"):
        OTNetTransport(device=device).fit(rng.normal(size=(20, 2)))


# ------------------------------------------------------------------- 3. atoms
def _brute_force_floor(atoms, nu):
    """Smallest marginal error over every assignment of whole atoms to cells."""
    best = np.inf
    for cells in itertools.product(range(len(nu)), repeat=len(atoms)):
        masses = np.bincount(cells, weights=atoms, minlength=len(nu))
        best = min(best, 0.5 * np.abs(masses - nu).sum())
    return best


def test_floor_of_a_single_atom_is_exact():
    nu = np.array([0.5, 0.3, 0.2])
    assert marginal_error_floor(np.array([1.0]), nu) == pytest.approx(0.5)
    assert marginal_error_floor(np.array([1.0]), np.full(10, 0.1)) == pytest.approx(0.9)


def test_floor_with_fewer_heavy_atoms_than_targets_is_exact():
    # 9 atoms of 1/9 onto 50 equal targets: 41 cells stay empty.
    assert marginal_error_floor(np.full(9, 1 / 9), np.full(50, 0.02)) == pytest.approx(0.82)
    nu = np.array([0.4, 0.3, 0.2, 0.1])
    atoms = np.array([0.5, 0.5])
    assert marginal_error_floor(atoms, nu) == pytest.approx(_brute_force_floor(atoms, nu))


def test_floor_of_equal_atoms_onto_equal_targets_is_the_rounding():
    # 9 atoms of 1/9 onto 5 targets of 1/5: cells of 2, 2, 2, 2, 1 atoms.
    floor = marginal_error_floor(np.full(9, 1 / 9), np.full(5, 0.2))
    assert floor == pytest.approx(4 * (2 / 9 - 1 / 5))
    from skot.da._defaults import _discreteness_floor

    for n, m in [(10, 3), (7, 7), (100, 7), (23, 5), (5, 12), (2000, 300)]:
        expected = _discreteness_floor(n, m)
        assert marginal_error_floor(np.full(n, 1 / n), np.full(m, 1 / m)) == pytest.approx(
            expected, rel=1e-6, abs=1e-12
        ), (n, m)


@pytest.mark.parametrize("seed", range(40))
def test_floor_never_exceeds_the_brute_force_minimum(seed):
    rng = np.random.default_rng(seed)
    k, m = rng.integers(1, 7), rng.integers(2, 5)
    atoms = rng.dirichlet(np.full(k, rng.choice([0.3, 1.0, 5.0])))
    nu = rng.dirichlet(np.full(m, rng.choice([0.5, 1.0, 10.0])))
    if seed % 4 == 0:
        atoms = np.full(k, 1 / k)
    floor = marginal_error_floor(atoms, nu)
    exact = _brute_force_floor(atoms, nu)
    assert 0 <= floor <= exact + 1e-12


def test_source_atoms_counts_distinct_rows_with_their_weights():
    X = np.array([[0.0, 1.0], [-0.0, 1.0], [2.0, 3.0], [0.0, 1.0], [5.0, 5.0]])
    np.testing.assert_allclose(np.sort(source_atoms(X, None)), [0.2, 0.2, 0.6])
    w = np.array([1.0, 1.0, 2.0, 0.0, 0.0]) / 4
    np.testing.assert_allclose(np.sort(source_atoms(X, w)), [0.5, 0.5])
    assert source_atoms(X.astype(np.float32), None).shape == (3,)


def test_source_atoms_survive_hash_collisions(monkeypatch):
    from skot import _validation

    monkeypatch.setattr(_validation, "_row_hashes", lambda X: np.zeros(X.shape[0], np.uint64))
    X = np.array([[0.0, 1.0], [2.0, 3.0], [0.0, 1.0], [5.0, 5.0]])
    np.testing.assert_allclose(np.sort(source_atoms(X, None)), [0.25, 0.25, 0.5])


def test_identical_source_rows_warn_up_front_and_stop_at_the_floor(rng):
    X = np.ones((1000, 2))
    Y = rng.normal(size=(10, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    messages = [str(w.message) for w in caught]
    atom = [w for w in caught if issubclass(w.category, AtomicSourceWarning)]
    assert len(atom) == 1, messages
    assert "1 distinct row" in messages[0] and "below 0.9" in messages[0]
    assert "bandwidth > 0" in messages[0] and "tol above 0.9" in messages[0]
    assert not any("increase max_iter" in m for m in messages)
    # The floor is exact here: the fit stops as soon as it is reached.
    assert ot.n_iter_ < 10 and ot.marginal_error_ == pytest.approx(0.9, abs=1e-6)
    assert not ot.converged_


def test_integer_grid_source_warns_with_the_floor(rng):
    X = rng.integers(0, 3, size=(2000, 2)).astype(float)  # 9 distinct rows
    Y = rng.normal(size=(50, 2))
    with pytest.warns(AtomicSourceWarning, match=r"9 distinct rows .* below 0\.82 > tol=0\.01"):
        ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    assert ot.marginal_error_ >= 0.82 - 1e-6 and ot.n_iter_ < 100


def test_atom_floor_not_reached_gives_the_right_final_advice(rng):
    # 25 atoms onto 20 targets: a floor above tol that no map reaches in 5 steps.
    X = rng.integers(0, 5, size=(2000, 2)).astype(float)
    Y = rng.normal(size=(20, 2)) * 2
    floor = marginal_error_floor(source_atoms(X, None), np.full(20, 1 / 20))
    assert floor > 1e-3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ot = OTNetTransport(height="vector", max_iter=5, tol=floor / 2, random_state=0)
        ot.fit(X, X_target=Y)
    final = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert len(final) == 1
    assert "25 distinct rows" in final[0] and "more iterations cannot reach tol" in final[0]
    assert "increase max_iter" not in final[0]


def test_repeated_rows_are_named_in_the_final_warning_even_without_a_floor(rng):
    X = rng.integers(0, 10, size=(2000, 2)).astype(float)  # 100 atoms, 50 targets: floor 0
    Y = rng.normal(size=(50, 2)) * 3
    with pytest.warns(ConvergenceWarning, match="100 distinct rows among 2000 rows") as caught:
        OTNetTransport(height="vector", max_iter=3, random_state=0).fit(X, X_target=Y)
    assert not any(issubclass(w.category, AtomicSourceWarning) for w in caught)
    assert not any("increase max_iter" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    "params", [{"bandwidth": 0.2}, {"epsilon": 0.1}, {"tol": 0.95}], ids=["bw", "eps", "tol"]
)
def test_no_atom_warning_where_atoms_do_not_matter(params, rng):
    X = np.ones((300, 2))
    Y = rng.normal(size=(10, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        OTNetTransport(height="vector", max_iter=5, random_state=0, **params).fit(X, X_target=Y)
    assert not any(issubclass(w.category, AtomicSourceWarning) for w in caught)


def test_atom_warning_is_a_convergence_warning_and_public():
    assert issubclass(skot.AtomicSourceWarning, ConvergenceWarning)
    assert issubclass(skot.AtomicSourceWarning, UserWarning)


# ------------------------------------------------------------------- 4. range
@pytest.mark.parametrize(
    ("side", "value", "match"),
    [
        ("X", 1e200, r"X has values up to .*e\+200 .* overflow float64"),
        ("X_target", 1e200, r"X_target has values up to .* overflow float64"),
        ("X", 1e-170, r"underflows float64"),
    ],
)
def test_values_out_of_range_are_refused_up_front(side, value, match, rng):
    X = rng.normal(size=(100, 2))
    Y = rng.normal(size=(10, 2))
    if side == "X" and value < 1:
        X, Y = X * value, Y * value
    elif side == "X":
        X = X * value
    else:
        Y = Y * value
    with pytest.raises(DataRangeError, match=match):
        OTNetTransport(height="vector").fit(X, X_target=Y)


def test_far_outlier_with_zero_weight_is_refused(rng):
    X = np.vstack([rng.normal(size=(50, 2)), [[1e20, 0.0]]])
    w = np.r_[np.ones(50), 0.0]
    with pytest.raises(DataRangeError, match=r"X has values up to .* float32 scores"):
        OTNetTransport(height="vector").fit(X, X_target=X[:5], sample_weight=w)


def test_large_values_whose_squares_overflow_float32_are_fine(rng):
    X = rng.normal(size=(2000, 2))
    Y = rng.normal(size=(20, 2))
    a = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    b = OTNetTransport(height="vector", random_state=0).fit(1e30 * X, X_target=1e30 * Y)
    assert np.mean(a.predict_index(X) == b.predict_index(1e30 * X)) > 0.99
    assert np.isfinite(b.heights_).all() and np.isfinite(b.transform(1e30 * X)).all()


def test_transform_refuses_rows_that_overflow_the_fitted_standardisation(rng):
    X = rng.normal(size=(100, 2))
    ot = OTNetTransport(**QUICK).fit(X, X_target=X[:10])
    for method in (ot.transform, ot.predict_index, ot.inverse_transform, ot.score):
        with pytest.raises(DataRangeError, match="X has values up to"):
            method(np.full((3, 2), 1e300))


def test_divergence_error_is_public_and_mentions_float32_overflow(rng):
    assert skot.DivergenceError is DivergenceError is skot._solver.DivergenceError
    assert skot.exceptions.DataRangeError is DataRangeError
    assert issubclass(DataRangeError, ValueError) and issubclass(DivergenceError, ValueError)
    X = rng.normal(size=(500, 2))
    ot = OTNetTransport(height="vector", solver="adam", height_learning_rate=1e300, random_state=0)
    with pytest.raises(DivergenceError, match="float32 overflow"):
        ot.fit(X, X_target=X[:20])
    assert np.isfinite(ot.heights_).all()


# ------------------------------------------------------------- found by the fuzzer
def test_spread_without_cancellation():
    # E|x|^2 - |E x|^2 cancelled to a negative spread (math domain error) on data far from 0.
    X = 1e8 + np.random.default_rng(0).normal(size=(200, 2)) * 1e-4
    ot = OTNetTransport(**QUICK).fit(X, X_target=X[:10])
    assert ot.scale_ > 0 and np.isfinite(ot.transform(X)).all()


@pytest.mark.parametrize("value", [1e308, 1e-320])
def test_huge_or_tiny_weights_are_normalised_without_overflow(value, rng):
    X = rng.normal(size=(50, 2))
    ot = OTNetTransport(**QUICK).fit(X, X_target=X[:5], sample_weight=np.full(50, value))
    ref = OTNetTransport(**QUICK).fit(X, X_target=X[:5])
    np.testing.assert_allclose(ot.heights_, ref.heights_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("ids", [[object()] * 5, [1, "a", 2.0, None, 3]])
def test_unsortable_target_ids_are_named(ids, rng):
    X = rng.normal(size=(50, 2))
    with pytest.raises(TypeError, match="target_ids"):
        OTNetTransport(**QUICK).fit(X, X_target=X[:5], target_ids=ids)


@pytest.mark.parametrize(
    "X",
    [np.zeros((0, 2)), np.zeros(4), np.array([["a", "b"]], dtype=object)],
    ids=["empty", "1d", "strings"],
)
def test_errors_about_rows_to_map_name_x(X, rng):
    ot = OTNetTransport(**QUICK).fit(rng.normal(size=(50, 2)))
    for method in (ot.transform, ot.predict_index, ot.inverse_transform, ot.score):
        with pytest.raises(ValueError, match=r"^X\b|\bX\b"):
            method(X)


def test_one_positive_target_weight_is_a_clear_error(rng):
    X = rng.normal(size=(50, 2))
    with pytest.raises(ValueError, match="at least 2 distinct points with a positive"):
        OTNetTransport(**QUICK).fit(X, X_target=X[:4], target_weight=[0, 0, 1, 0])


# ------------------------------------------------------ failures leave state unchanged
@pytest.fixture
def fitted(rng):
    X = rng.normal(size=(300, 3))
    return OTNetTransport(height="vector", random_state=0).fit(X, X_target=X[:20]), X


@pytest.mark.parametrize(
    "call",
    [
        lambda ot, X: ot.fit(np.full_like(X, np.nan), X_target=X[:5]),
        lambda ot, X: ot.fit(X[:, :2], X_target=X[:5, :2], sample_weight=-np.ones(300)),
        lambda ot, X: ot.fit(X, X_target=X[:5, :2]),
        lambda ot, X: ot.fit(X * 1e200, X_target=X[:5]),
        lambda ot, X: ot.fit(X, X_target=X[:5], target_ids=[1, 1, 2, 3, 4]),
        lambda ot, X: ot.partial_fit(X[:, :2]),
        lambda ot, X: ot.partial_fit(X, sample_weight=np.zeros(300)),
        lambda ot, X: ot.partial_fit(X * 1e30),
        lambda ot, X: ot.partial_fit(X, X_target=np.full((4, 3), np.inf)),
        lambda ot, X: ot.set_params(hidden_layer_sizes=(0,)).fit(X),
        lambda ot, X: ot.set_params(device="tpu").fit(X),
    ],
)
def test_a_failed_call_leaves_a_fitted_estimator_unchanged(fitted, call):
    ot, X = fitted
    before = _fitted_state(ot)
    params = ot.get_params()
    with pytest.raises((ValueError, TypeError)):
        call(ot, X)
    ot.set_params(**params)
    _assert_same_state(before, _fitted_state(ot))
    ot.transform(X)  # still usable


def test_a_failed_first_fit_leaves_an_unfitted_estimator(rng):
    ot = OTNetTransport(**QUICK)
    with pytest.raises(ValueError):
        ot.fit(rng.normal(size=(50, 2)), sample_weight=-np.ones(50))
    assert not hasattr(ot, "n_features_in_") and not hasattr(ot, "_state")


# ------------------------------------------------------------------- interruptions
class _Interrupt:
    """A callback that presses Ctrl-C after ``after`` evaluations."""

    def __init__(self, after, poison=False):
        self.after, self.poison, self.steps = after, poison, []

    def __call__(self, estimator, record):
        self.steps.append(record.step)
        if len(self.steps) == self.after:
            if self.poison:  # an interruption in the middle of a diverging step
                with torch.no_grad():
                    for p in estimator._state.model.parameters():
                        p.fill_(float("nan"))
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "params",
    [
        {"height": "vector", "solver": "adam", "batch_size": 256},
        {"height": "vector", "solver": "newton"},
        {"height": "network", "hidden_layer_sizes": (16,), "batch_size": 256},
        {"height": "residual", "hidden_layer_sizes": (16,)},
    ],
    ids=["adam", "newton", "network", "residual"],
)
def test_keyboard_interrupt_keeps_the_last_finite_state(params, rng):
    X = rng.normal(size=(2000, 2))
    Y = rng.normal(size=(40, 2))
    stop = _Interrupt(after=3)
    ot = OTNetTransport(tol=1e-9, random_state=0, callbacks=[stop], **params)
    with pytest.raises(KeyboardInterrupt):
        ot.fit(X, X_target=Y)
    check_is_fitted(ot)
    assert ot.n_iter_ == stop.steps[-1] == len(ot.loss_curve_)
    for name in ("heights_", "barycenters_", "target_", "center_"):
        assert np.isfinite(getattr(ot, name)).all(), name
    Z = rng.normal(size=(2000, 2))
    np.testing.assert_array_equal(ot.predict_index(Z), np.argmax(Z @ ot.target_.T + ot.heights_, 1))
    counts = np.bincount(ot.predict_index(X), minlength=40) / 2000
    assert ot.marginal_error_ == pytest.approx(0.5 * np.abs(counts - 1 / 40).sum(), abs=1e-6)
    # It trains on from there.
    ot.set_params(callbacks=None, tol=0.2)
    steps = ot.n_iter_
    ot.partial_fit(X)
    assert ot.n_iter_ > steps and np.isfinite(ot.heights_).all()


def test_interrupt_in_a_non_finite_state_returns_to_the_call_start(rng):
    X = rng.normal(size=(1000, 2))
    Y = rng.normal(size=(20, 2))
    ot = OTNetTransport(height="vector", solver="adam", batch_size=128, tol=0.2, random_state=0)
    ot.fit(X, X_target=Y)
    before = ot.heights_.copy()
    ot.set_params(callbacks=[_Interrupt(after=1, poison=True)], warm_start=True, tol=1e-9)
    with pytest.raises(KeyboardInterrupt):
        ot.fit(X, X_target=Y)
    assert np.isfinite(ot.heights_).all()
    np.testing.assert_allclose(ot.heights_, before, rtol=1e-5, atol=1e-6)
    ot.set_params(callbacks=None, tol=0.2).partial_fit(X)
    assert np.isfinite(ot.heights_).all()


# ---------------------------------------------- found by the fuzzer in the sampler and adapter
def _quick_transport():
    return OTNetTransport(height="vector", max_iter=5, tol=0.3, random_state=0)


def test_sampler_identical_rows_error_names_x():
    sampler = OTNetSampler(n_latent=64, transport=_quick_transport(), random_state=0)
    with pytest.raises(ValueError) as info:
        sampler.fit(np.ones((5, 2)))
    assert "X_target" not in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "X", [np.eye(5, 2), np.arange(10.0).reshape(5, 2) ** 2], ids=["eye", "squares"]
)
def test_sampler_negative_weights_are_named(X):
    sampler = OTNetSampler(n_latent=64, transport=_quick_transport(), random_state=0)
    with pytest.raises(ValueError, match="sample_weight"):
        sampler.fit(X, sample_weight=[1.0, -1.0, 1.0, 1.0, 1.0])


def test_sampler_reports_the_overflow_of_huge_data(rng):
    sampler = OTNetSampler(n_latent=64, transport=_quick_transport(), random_state=0)
    with pytest.raises(ValueError, match="overflow"):
        sampler.fit(rng.normal(size=(5, 2)) * 1e160)


def test_sampler_huge_weights_keep_the_placement(rng):
    X = rng.normal(size=(6, 2)) + 5
    sampler = OTNetSampler(n_latent=64, transport=_quick_transport(), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        sampler.fit(X, sample_weight=np.full(6, 1e308))
    np.testing.assert_allclose(sampler.latent_shift_, X.mean(axis=0))


@pytest.mark.parametrize(
    "X", [np.zeros(4), np.zeros((0, 2)), np.zeros((4, 2, 1))], ids=["1d", "empty", "3d"]
)
def test_adapter_errors_name_x(X, rng):
    from skot.da import OTNetAdapter

    adapter = OTNetAdapter(transport=_quick_transport())
    with pytest.raises(ValueError, match=r"\bX\b"):
        adapter.fit_transform(X, X_target=rng.normal(size=(4, 2)))


def test_adapter_sample_domain_of_strings_is_named(rng):
    from skot.da import OTNetAdapter

    with pytest.raises((ValueError, TypeError), match="sample_domain"):
        OTNetAdapter(transport=_quick_transport()).fit_transform(
            rng.normal(size=(6, 2)), sample_domain=["a"] * 6
        )


def test_adapter_refuses_y_of_the_wrong_length(rng):
    from skot.da import OTNetAdapter

    with pytest.raises(ValueError, match=r"\by\b"):
        OTNetAdapter(transport=_quick_transport()).fit_transform(
            rng.normal(size=(6, 2)), [0, 1], X_target=rng.normal(size=(4, 2))
        )


def test_adapter_pseudo_labels_with_few_source_rows(rng):
    from skot.da import OTNetAdapter

    adapter = OTNetAdapter(transport=_quick_transport(), label_weight=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        out = adapter.fit_transform(
            rng.normal(size=(6, 2)), [0, 0, 0, 1, 1, 1], X_target=rng.normal(size=(12, 2))
        )
    assert out.shape == (6, 2) and np.isfinite(out).all()
