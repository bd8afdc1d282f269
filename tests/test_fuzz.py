"""Fuzzing every public entry point with hypothesis (issue 19).

Generated shapes, dtypes (float16/32/64, int, bool, object), special values (nan, inf, -0.0,
huge, tiny), weights (negative, zero, nan, huge), duplicates, empty and single rows, lists,
pandas and scipy sparse inputs go through ``OTNetTransport`` (``fit``, ``partial_fit``,
``transform``, ``inverse_transform``, ``predict_index``, ``score``), ``OTNetAdapter``
(``fit_transform``, ``transform``), ``OTNetSampler`` (``fit``, ``sample``) and the command line
(``skot._cli.main``). The properties:

- either a ``ValueError`` / ``TypeError`` whose message names the input (or parameter) at
  fault, raised from skot's or scikit-learn's code, never from inside torch;
- or a finite result of the right shape and dtype;
- and a failed call leaves a fitted estimator exactly as it was.

Profiles (environment variable ``HYPOTHESIS_PROFILE``): ``ci`` (the default: few examples,
derandomised, so that CI is fast and deterministic) and ``thorough`` (many more examples, for a
local hunt: ``HYPOTHESIS_PROFILE=thorough pytest tests/test_fuzz.py
--hypothesis-show-statistics``). Every bug found is pinned by a plain test in
``tests/test_validation.py``.
"""

import contextlib
import copy
import io
import itertools
import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.utils.validation import check_array, check_is_fitted
from test_validation import _brute_force_floor

from skot import OTNetSampler, OTNetTransport

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, event, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pd = pytest.importorskip("pandas")

_COMMON = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=2000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def fuzz(scale=1.0):
    """The selected profile, with ``scale`` times its examples (cheap properties run more)."""
    return settings(PROFILE, max_examples=max(1, int(PROFILE.max_examples * scale)))


TORCH_DIR = os.path.dirname(torch.__file__)
FIT_INPUTS = ("X", "X_target", "sample_weight", "target_weight", "target_ids")

# ------------------------------------------------------------------------ strategies
SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e300, -1e300, 1e-300, 5e-324, 1e30, 3.4e38]
MAGNITUDES = [1.0, 1.0, 1.0, 1e-8, 1e8, 1e30, 1e-30, 1e200, 1e-200]
FLOAT_DTYPES = [np.float64, np.float64, np.float32, np.float16]
ALL_DTYPES = FLOAT_DTYPES + [np.int64, np.int8, np.uint8, bool, object]


def _strategy(value):
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


@st.composite
def matrices(draw, n_rows=None, n_features=None, odd=True, containers=True, dtypes=ALL_DTYPES):
    """An input matrix: mostly a 2-D float array of a few rows, with odd shapes, dtypes,
    magnitudes, special values, duplicates and containers mixed in."""
    # A third of the matrices are clean (several rows, finite, moderate): valid fits whose
    # dtypes, containers and duplicates still vary; the others are hostile.
    clean = draw(st.integers(0, 2)) == 0
    n = draw(st.integers(2 if clean else 0, 9) if n_rows is None else _strategy(n_rows))
    d = draw(st.integers(1, 3) if n_features is None else _strategy(n_features))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = rng.normal(size=(n, d)) * draw(st.sampled_from(MAGNITUDES[:5] if clean else MAGNITUDES))
    A += draw(st.sampled_from([0.0, 0.0, 0.0, 1e8, -1e10]))  # far from zero: cancellation
    if n > 1 and draw(st.integers(0, 3)) == 0:  # repeated rows
        A[rng.integers(0, n, size=n)] = A[0]
    if n and not clean and draw(st.integers(0, 2)) == 0:
        for _ in range(draw(st.integers(1, 2))):
            A[rng.integers(n), rng.integers(d)] = draw(st.sampled_from(SPECIALS))
    dtype = draw(st.sampled_from([t for t in dtypes if t is not object] if clean else dtypes))
    odd = odd and not clean
    with np.errstate(all="ignore"):
        if dtype in (np.int64, np.int8, np.uint8):
            A = rng.integers(0, 4, size=(n, d)).astype(dtype)
        elif dtype is bool:
            A = A > 0
        elif dtype is object:
            A = A.astype(object)
            if n and draw(st.booleans()):
                A[0, 0] = draw(st.sampled_from(["a", None, "1.5", b"x", 1j]))
        else:
            A = A.astype(dtype)
    if odd:
        shape = draw(st.sampled_from(["2d"] * 12 + ["1d", "3d", "scalar"]))
        if shape == "1d":
            return A.ravel()
        if shape == "3d":
            return A.reshape(n, d, 1)
        if shape == "scalar":
            return A.ravel()[0] if A.size else 1.0
    if containers:
        kind = draw(st.sampled_from(["array"] * 10 + ["list", "frame", "sparse", "fortran"]))
        if kind == "list":
            return A.tolist()
        if kind == "frame":
            return pd.DataFrame(A, columns=[f"f{j}" for j in range(d)])
        if kind == "sparse" and A.dtype not in (object, np.float16):
            return sp.csr_matrix(A)
        if kind == "fortran":
            return np.asfortranarray(A)
    return A


@st.composite
def weights(draw, n):
    """``None`` mostly; else a weight vector of about ``n`` entries, with bad values."""
    if draw(st.integers(0, 2)) == 0:
        return None
    length = draw(st.sampled_from([n] * 6 + [max(n - 1, 0), n + 1]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = rng.uniform(0, 1, size=length) * draw(st.sampled_from([1.0, 1.0, 1e308, 1e-320, 1e-300]))
    if draw(st.booleans()):  # clean
        return w
    if length and draw(st.integers(0, 2)) == 0:
        w[rng.integers(length)] = draw(st.sampled_from([-1.0, 0.0, np.nan, np.inf, -0.0]))
    if draw(st.integers(0, 6)) == 0:
        w[:] = 0.0
    if draw(st.integers(0, 6)) == 0:
        w = w.reshape(-1, 1)
    with np.errstate(all="ignore"):
        return draw(st.sampled_from([w, w, w.tolist(), w.astype(np.float32)]))


@st.composite
def target_ids(draw, m):
    if m is None or draw(st.integers(0, 4)) != 0:
        return None
    kind = draw(st.sampled_from(["int", "dup", "str", "mixed", "short"]))
    if kind == "int":
        return list(range(m))
    if kind == "dup":
        return [0] * m
    if kind == "str":
        return [f"p{i}" for i in range(m)]
    if kind == "mixed":
        return [1, "a", None, 2.0][: max(m, 1)] * (m // 4 + 1)
    return list(range(max(m - 1, 0)))


PARAMS = st.fixed_dictionaries(
    {
        "height": st.sampled_from(["vector", "vector", "network", "residual"]),
        "epsilon": st.sampled_from([0.0, 0.0, 0.0, 0.1]),
        "bandwidth": st.sampled_from([0.0, 0.0, 0.0, 0.1]),
        "init": st.sampled_from(["gaussian", "voronoi"]),
    }
)


def quick(**params) -> OTNetTransport:
    """A transport that fits tiny problems in a few milliseconds."""
    base = {
        "height": "vector",
        "hidden_layer_sizes": (4,),
        "max_iter": 4,
        "tol": 0.3,
        "batch_size": 8,
        "fourier_scale": 0.0,
        "random_state": 0,
    }
    return OTNetTransport(**{**base, **params})


# ------------------------------------------------------------------------ properties
def _last_frame(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename


def _names_one_of(message: str, names) -> bool:
    import re

    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names)


def attempt(call, names, require_name=True):
    """Run ``call``; return its result, or ``None`` after a clean error naming one of
    ``names``. Anything else (another exception type, an error from inside torch, a message
    that names nothing) fails the property. ``require_name=False`` for the entry points
    whose messages do not name their input yet (pinned by strict xfail tests in
    tests/test_validation.py)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
    except (ValueError, TypeError) as exc:
        note(f"{type(exc).__name__}: {exc}")
        event(f"{names[0]}...: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:60]}")
        assert not _last_frame(exc).startswith(TORCH_DIR), f"raised inside torch: {exc!r}"
        if require_name:
            assert _names_one_of(str(exc), names), f"the message names none of {names}: {exc}"
        return None
    event(f"{names[0]}...: result")
    return out


def expected_dtype(X):
    """The float dtype ``transform`` must return for ``X`` (scikit-learn's own rule)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return check_array(X, dtype=[np.float64, np.float32]).dtype


def n_rows(X) -> int:
    return np.asarray(X).shape[0] if not sp.issparse(X) else X.shape[0]


def assert_fitted_and_finite(ot: OTNetTransport):
    check_is_fitted(ot)
    for name in ("heights_", "target_", "target_weight_", "barycenters_", "center_"):
        assert np.isfinite(getattr(ot, name)).all(), name
    assert np.isfinite(ot.scale_) and ot.scale_ > 0
    assert 0.0 <= ot.marginal_error_ <= 1.0 + 1e-6
    assert ot.n_iter_ >= 1 and len(ot.loss_curve_) == ot.n_iter_
    assert np.isfinite(ot.loss_curve_).all()
    assert ot.target_weight_.sum() == pytest.approx(1.0)


def snapshot(est) -> dict:
    """The state a failed call must leave unchanged (attributes, parameters, model)."""
    out = {"__keys__": sorted(est.__dict__), "__params__": repr(est.get_params())}
    for key, value in est.__dict__.items():
        if isinstance(value, np.ndarray):
            out[key] = value.copy()
        elif isinstance(value, (int, float, str, bool, list, tuple, type(None))):
            out[key] = copy.deepcopy(value)
    state = est.__dict__.get("_state")
    if state is not None:
        out["__step__"] = state.step
        out["__model__"] = {k: v.clone() for k, v in state.model.state_dict().items()}
    return out


def assert_unchanged(before: dict, after: dict):
    assert before.keys() == after.keys()
    for key, value in before.items():
        if key == "__model__":
            for name, tensor in value.items():
                assert torch.equal(tensor, after[key][name]), name
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, after[key], err_msg=key)
        else:
            assert value == after[key], key


def check_mapping(ot, X, note_name="X"):
    """Every mapping method on ``X``: a clean error naming X, or finite results."""
    before = snapshot(ot)
    m, d = ot.target_.shape
    out = attempt(lambda: ot.transform(X), ["X"])
    if out is not None:
        assert out.shape == (n_rows(X), d) and out.dtype == expected_dtype(X)
        assert np.isfinite(out).all()
    idx = attempt(lambda: ot.predict_index(X), ["X"])
    if idx is not None:
        assert idx.shape == (n_rows(X),) and np.issubdtype(idx.dtype, np.integer)
        assert ((idx >= 0) & (idx < m)).all()
    back = attempt(lambda: ot.inverse_transform(X), ["X"])
    if back is not None:
        assert back.shape == (n_rows(X), d) and np.isfinite(back).all()
    assert_unchanged(before, snapshot(ot))
    return out


_FITTED: dict = {}


def fitted(kind: str = "vector", d: int = 2) -> OTNetTransport:
    """A fitted transport (fitted once per session; callers that change it get a copy)."""
    key = (kind, d)
    if key not in _FITTED:
        rng = np.random.default_rng(d)
        X = rng.normal(size=(60, d))
        params = {"height": kind, "epsilon": 0.1 if kind == "soft" else 0.0}
        if kind == "soft":
            params["height"] = "vector"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITTED[key] = quick(max_iter=20, **params).fit(X, X_target=X[:6])
    return _FITTED[key]


# --------------------------------------------------------------------- the transport
@fuzz(2)
@given(data=st.data(), params=PARAMS)
def test_fit_gives_a_clean_error_or_a_finite_map(data, params):
    X = data.draw(matrices(), label="X")
    n = n_rows(X) if np.ndim(X) else 0
    d = np.shape(X)[1] if np.ndim(X) == 2 else 2
    X_target = data.draw(
        st.one_of(st.none(), matrices(n_features=st.sampled_from([d] * 5 + [d + 1]))),
        label="X_target",
    )
    m = None if X_target is None or np.ndim(X_target) != 2 else n_rows(X_target)
    kwargs = {
        "sample_weight": data.draw(weights(n), label="sample_weight"),
        "target_weight": data.draw(weights(n if m is None else m), label="target_weight"),
        "target_ids": data.draw(target_ids(n if m is None else m), label="target_ids"),
    }
    ot = quick(**params)
    if attempt(lambda: ot.fit(X, X_target=X_target, **kwargs), FIT_INPUTS) is None:
        assert not hasattr(ot, "_state") and not hasattr(ot, "n_features_in_")
        return
    assert_fitted_and_finite(ot)
    out = check_mapping(ot, X)
    assert out is not None  # what fit accepted, transform accepts
    score = ot.score(X)
    assert -1.0 - 1e-9 <= score <= 0.0


@fuzz(2)
@given(X=matrices(), kind=st.sampled_from(["vector", "network", "soft"]))
def test_mapping_gives_a_clean_error_or_finite_rows(X, kind):
    d = np.shape(X)[1] if np.ndim(X) == 2 else 2
    check_mapping(fitted(kind, d=d if d in (1, 2, 3) else 2), X)


@fuzz()
@given(data=st.data())
def test_score_gives_a_clean_error_or_a_number(data):
    ot = fitted("vector", 2)
    X = data.draw(matrices(n_features=st.just(2)), label="X")
    n = n_rows(X) if np.ndim(X) else 0
    w = data.draw(weights(n), label="sample_weight")
    before = snapshot(ot)
    score = attempt(lambda: ot.score(X, sample_weight=w), ["X", "sample_weight"])
    if score is not None:
        assert isinstance(score, float) and -1.0 - 1e-9 <= score <= 0.0
    assert_unchanged(before, snapshot(ot))


@fuzz(2)
@given(data=st.data(), method=st.sampled_from(["partial_fit", "fit", "warm"]))
def test_a_failed_refit_or_partial_fit_leaves_the_estimator_unchanged(data, method):
    ot = copy.deepcopy(fitted("vector" if data.draw(st.booleans()) else "network", 2))
    X = data.draw(matrices(n_features=st.sampled_from([2, 2, 2, 3])), label="X")
    n = n_rows(X) if np.ndim(X) else 0
    X_target = data.draw(
        st.one_of(st.none(), matrices(n_features=st.sampled_from([2, 2, 3]))), label="X_target"
    )
    w = data.draw(weights(n), label="sample_weight")
    if method == "warm":
        ot.set_params(warm_start=True)
    before = snapshot(ot)
    call = ot.partial_fit if method == "partial_fit" else ot.fit
    if attempt(lambda: call(X, X_target=X_target, sample_weight=w), FIT_INPUTS) is None:
        assert_unchanged(before, snapshot(ot))
        return
    assert_fitted_and_finite_after_update(ot, before, method)
    check_mapping(ot, X)


def assert_fitted_and_finite_after_update(ot, before, method):
    check_is_fitted(ot)
    for name in ("heights_", "target_", "barycenters_"):
        assert np.isfinite(getattr(ot, name)).all(), name
    assert ot.n_iter_ >= 1 and 0.0 <= ot.marginal_error_ <= 1.0 + 1e-6
    if method != "fit":  # partial_fit and warm starts count on
        assert ot.n_iter_ > before["n_iter_"]


@fuzz()
@given(
    sizes=st.one_of(
        st.lists(st.integers(1, 6), max_size=3).map(tuple),
        st.lists(st.integers(-2, 6), max_size=3).map(tuple),
        st.lists(st.floats(-1, 5), max_size=2).map(tuple),
        st.sampled_from([(True,), ("4",), [[4]], 4, "44", None, ()]),
    ),
    device=st.sampled_from(["cpu", "auto", torch.device("cpu"), "tpu", "cuda:x", 0, None, "cpu:0"]),
    tol=st.sampled_from([0.3, 0.0, -1.0, np.nan, np.inf, 1e-300]),
    epsilon=st.sampled_from([0.0, 0.1, -1.0, np.nan, np.inf, 1e30, 1e-30]),
    bandwidth=st.sampled_from([0.0, 0.1, -0.1, np.inf, 1e30]),
    height=st.sampled_from(["network", "residual", "vector"]),
)
def test_parameters_give_a_clean_error_or_a_finite_map(
    sizes, device, tol, epsilon, bandwidth, height
):
    X = np.random.default_rng(0).normal(size=(30, 2))
    ot = quick(
        hidden_layer_sizes=sizes,
        device=device,
        tol=tol,
        epsilon=epsilon,
        bandwidth=bandwidth,
        height=height,
    )
    names = ["hidden_layer_sizes", "device", "tol", "epsilon", "bandwidth", "solver"]
    if attempt(lambda: ot.fit(X, X_target=X[:5]), names) is None:
        return
    assert_fitted_and_finite(ot)
    assert np.isfinite(ot.transform(X)).all()


# ------------------------------------------------------------------------ the adapter
#: The adapter's and the sampler's errors are checked with and without the naming property.
NAMING = [pytest.param(False, id="clean"), pytest.param(True, id="named")]
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


@pytest.mark.parametrize("named", NAMING)
@settings(fuzz(), phases=NO_SHRINK)
@given(data=st.data())
def test_adapter_gives_a_clean_error_or_finite_rows(data, named):
    from skot.da import OTNetAdapter

    X = data.draw(matrices(), label="X")
    d = np.shape(X)[1] if np.ndim(X) == 2 else 2
    targets = matrices(n_features=st.sampled_from([d] * 5 + [d + 1]))
    X_target = data.draw(st.one_of(st.none(), targets, targets, targets), label="X_target")
    adapter = OTNetAdapter(transport=quick())
    names = ["X", "X_target", "y", "sample_domain"]
    out = attempt(lambda: adapter.fit_transform(X, X_target=X_target), names, named)
    if out is None:
        return
    assert out.shape == (n_rows(X), d) and np.isfinite(out).all()
    assert out.dtype == expected_dtype(X)
    X_new = data.draw(matrices(n_features=st.sampled_from([d, d, d + 1])), label="X_new")
    passed = attempt(lambda: adapter.transform(X_new), ["X"], named)
    if passed is not None:
        assert passed.shape == (n_rows(X_new), d) and np.isfinite(passed).all()
    moved = attempt(lambda: adapter.transform_source(X_new), ["X"], named)
    if moved is not None:
        assert moved.shape == (n_rows(X_new), d) and np.isfinite(moved).all()


# ------------------------------------------------------------------------ the sampler
@pytest.mark.parametrize("named", NAMING)
@settings(fuzz(), phases=NO_SHRINK)
@given(data=st.data(), n_samples=st.sampled_from([1, 5, 0, -1, 2.5, True, "3", None]))
def test_sampler_gives_a_clean_error_or_finite_points(data, n_samples, named):
    X = data.draw(matrices(), label="X")
    n = n_rows(X) if np.ndim(X) else 0
    w = data.draw(weights(n), label="sample_weight")
    sampler = OTNetSampler(n_latent=64, transport=quick(max_iter=6), random_state=0)
    if attempt(lambda: sampler.fit(X, sample_weight=w), ["X", "sample_weight"], named):
        d = sampler.n_features_in_
        assert np.isfinite(sampler.heights_).all() and np.isfinite(sampler.target_).all()
        new = attempt(lambda: sampler.sample(n_samples, random_state=0), ["n_samples"], True)
        if new is not None:
            assert new.shape == (int(n_samples), d) and np.isfinite(new).all()


# ------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    Image = pytest.importorskip("PIL.Image")
    root = tmp_path_factory.mktemp("fuzz_cli")
    rng = np.random.default_rng(0)
    paths = {}
    for name, size in (("a.png", (6, 5)), ("b.png", (4, 4))):
        Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(root / name)
        paths[name] = str(root / name)
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(root / "flat.png")
    paths["flat.png"] = str(root / "flat.png")
    (root / "text.png").write_text("not an image")
    paths["text.png"] = str(root / "text.png")
    paths["missing.png"] = str(root / "missing.png")
    paths["dir"] = str(root)
    paths["root"] = root
    return paths


_VALUES = ["0", "1", "-1", "3", "2.5", "nan", "inf", "-inf", "1e309", "", "abc", "1e-3", "cpu"]
_OPTIONS = [
    "-n",
    "--sample-size",
    "-m",
    "--reference-size",
    "--height",
    "--max-iter",
    "--tol",
    "--epsilon",
    "--device",
    "--seed",
]
_FLAGS = ["-v", "-vv", "--progress", "--no-progress", "-f", "--force", "--help", "--version"]
_counter = itertools.count()


@fuzz()
@given(data=st.data())
def test_cli_ends_with_a_status_and_at_most_one_line(data, images):
    option_tokens = st.one_of(
        st.tuples(st.sampled_from(_OPTIONS), st.sampled_from(_VALUES + ["vector", "cuda:9"])),
        st.tuples(st.sampled_from(_FLAGS)),
        st.tuples(st.sampled_from(["--bogus", "-x", "--sample-size=7", "--tol=-1"])),
    )
    options = [t for group in data.draw(st.lists(option_tokens, max_size=4)) for t in group]
    files = st.sampled_from(["a.png", "b.png", "flat.png", "text.png", "missing.png", "dir"])
    out_name = data.draw(st.sampled_from(["out.png", "out.unknown", "dir", "nodir/out.png"]))
    out = (
        images[out_name]
        if out_name == "dir"
        else str(images["root"] / f"{next(_counter)}_{out_name}")
    )
    command = data.draw(st.sampled_from(["color-transfer"] * 6 + ["", "transfer", "-v"]))
    positional = [images[data.draw(files)], images[data.draw(files)], out]
    positional = positional[: data.draw(st.sampled_from([3, 3, 3, 2, 0]))]
    # Options after the generated ones keep every fit tiny (argparse keeps the last value).
    tiny = ["-n", "30", "-m", "6", "--max-iter", "5", "--no-progress", "--device", "cpu"]
    argv = [a for a in [command] if a] + positional + options + tiny
    note(f"argv: {argv}")
    from skot._cli import main

    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = main(argv)
    err = stderr.getvalue()
    note(f"status {status}, stderr: {err!r}")
    event(f"status {status}: {err[:40]}")
    assert status in (0, 1, 2)
    assert "Traceback" not in err and "Traceback" not in stdout.getvalue()
    if status != 0:
        # One line: the error (a --help/--version exit is 0).
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("skot"), err


# --------------------------------------------------------- the floor of atoms, exactly


@fuzz(10)
@given(
    atoms=st.lists(st.integers(1, 20), min_size=1, max_size=6),
    nu=st.lists(st.integers(1, 20), min_size=2, max_size=4),
)
def test_atom_floor_never_exceeds_the_smallest_reachable_error(atoms, nu):
    from skot._validation import marginal_error_floor

    a = np.array(atoms, float) / sum(atoms)
    w = np.array(nu, float) / sum(nu)
    floor = marginal_error_floor(a, w)
    assert 0.0 <= floor <= _brute_force_floor(a, w) + 1e-12
    if len(atoms) == 1:
        assert floor == pytest.approx(1 - w.max())
