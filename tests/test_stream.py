"""Streams: partial_fit continues a fit without making it worse, and accumulates its counts."""

import dataclasses
import pickle

import numpy as np
import pytest

from skot import OTNetTransport

SMALL_NET = {"hidden_layer_sizes": (32,)}


def _fresh_tv(ot, X_fresh):
    return -ot.score(X_fresh)


@pytest.mark.parametrize(
    ("height", "rows"), [("vector", 1000), ("residual", 1000), ("network", 10)]
)
def test_partial_fit_after_fit_never_makes_the_map_worse(rng, height, rows):
    Y = rng.uniform(-2, 2, size=(100, 2))
    ot = OTNetTransport(height=height, tol=2e-3, random_state=0, **SMALL_NET)
    ot.fit(rng.normal(size=(20_000, 2)), X_target=Y)
    X_fresh = rng.normal(size=(200_000, 2))
    before = _fresh_tv(ot, X_fresh)
    for _ in range(10):
        ot.partial_fit(rng.normal(size=(rows, 2)), X_target=Y)
        assert _fresh_tv(ot, X_fresh) <= 1.1 * before + 0.005
    assert ot.n_samples_seen_ == 20_000 + 10 * rows


def test_a_long_stream_goes_below_the_fit(rng):
    """More fresh samples than the fit had: the population TV goes down, not up."""
    Y = rng.uniform(-2, 2, size=(200, 2))
    ot = OTNetTransport(height="vector", tol=1e-3, random_state=0)
    ot.fit(rng.normal(size=(20_000, 2)), X_target=Y)
    X_fresh = rng.normal(size=(400_000, 2))
    before = _fresh_tv(ot, X_fresh)
    for _ in range(60):
        ot.partial_fit(rng.normal(size=(1000, 2)), X_target=Y)
    assert _fresh_tv(ot, X_fresh) < 0.85 * before


def test_stream_attributes_are_those_of_the_union(rng):
    """With a frozen map (step sizes ~0), the running counts and sums are the union's."""
    Y = rng.normal(size=(20, 2))
    ot = OTNetTransport(
        height="vector", learning_rate=1e-12, height_learning_rate=1e-12, random_state=0
    )
    A, B = rng.normal(size=(3000, 2)), rng.normal(size=(2000, 2))
    ot.partial_fit(A, X_target=Y)
    ot.partial_fit(B)
    assert ot.n_samples_seen_ == 5000
    union = np.vstack([A, B])
    cells = np.argmax(union @ ot.target_.T + ot.heights_, axis=1)
    counts = np.bincount(cells, minlength=20)
    expected = ot.target_.copy()
    for j in np.flatnonzero(counts):
        expected[j] = union[cells == j].mean(axis=0)
    np.testing.assert_allclose(ot.barycenters_, expected, atol=1e-5)
    tv = 0.5 * np.abs(counts / 5000 - 1 / 20).sum()
    assert ot.marginal_error_ == pytest.approx(tv, abs=1e-6)  # float32 row weights


def test_a_stream_survives_pickling(rng):
    Y = rng.normal(size=(30, 2))
    ot = OTNetTransport(height="vector", random_state=0).fit(rng.normal(size=(5000, 2)), X_target=Y)
    ot.partial_fit(rng.normal(size=(1000, 2)))
    copy = pickle.loads(pickle.dumps(ot))
    np.testing.assert_array_equal(copy.heights_, ot.heights_)
    assert copy.n_samples_seen_ == ot.n_samples_seen_
    batch = rng.normal(size=(1000, 2))
    ot.partial_fit(batch)
    copy.partial_fit(batch)
    np.testing.assert_allclose(copy.heights_, ot.heights_, atol=1e-6)


def test_warm_fit_after_a_stream_starts_from_the_streamed_map(rng):
    Y = rng.normal(size=(30, 2))
    X = rng.normal(size=(5000, 2))
    ot = OTNetTransport(height="vector", warm_start=True, random_state=0).fit(X, X_target=Y)
    ot.partial_fit(rng.normal(size=(2000, 2)))
    streamed = ot.predict_index(X)
    ot.set_params(max_iter=1, tol=1.0)  # one evaluation, no step: the map is kept
    ot.fit(X, X_target=Y)
    assert np.mean(ot.predict_index(X) == streamed) == 1.0
    assert ot.n_samples_seen_ == X.shape[0]  # a fit starts a new stream from its sample


def test_stream_records_report_the_decayed_step_size(rng):
    Y = rng.normal(size=(30, 2))
    records = []
    ot = OTNetTransport(height="vector", batch_size=500, random_state=0)
    ot.fit(rng.normal(size=(5000, 2)), X_target=Y)
    ot.set_params(callbacks=[lambda est, record: records.append(record)])
    ot.partial_fit(rng.normal(size=(1000, 2)))
    assert len(records) == 2 and not any(r.exact for r in records)
    # sqrt(batch / rows seen) of the initial step size, 1e-2 for free heights.
    assert records[0].learning_rate == pytest.approx(1e-2 * (500 / 5000) ** 0.5)


def test_a_stream_from_scratch_reaches_the_fit_quality(rng):
    """Free heights from scratch: the stream's rows are solved by Newton steps as they grow."""
    Y = rng.uniform(-2, 2, size=(30, 2))
    X = rng.normal(size=(10_000, 2))
    X_fresh = rng.normal(size=(100_000, 2))
    ot = OTNetTransport(height="vector", tol=2e-3, random_state=0)
    for r0 in range(0, 10_000, 1000):
        ot.partial_fit(X[r0 : r0 + 1000], X_target=Y)
    fit = OTNetTransport(height="vector", tol=2e-3, random_state=0).fit(X, X_target=Y)
    assert ot.n_samples_seen_ == 10_000
    assert _fresh_tv(ot, X_fresh) <= 1.3 * _fresh_tv(fit, X_fresh)


def test_a_full_buffer_is_dropped_for_averaged_steps(rng, monkeypatch):
    config = OTNetTransport._config
    monkeypatch.setattr(
        OTNetTransport,
        "_config",
        lambda self: dataclasses.replace(config(self), max_eval_samples=3000),
    )
    Y = rng.normal(size=(20, 2))
    ot = OTNetTransport(height="vector", random_state=0)
    for _ in range(3):
        ot.partial_fit(rng.normal(size=(1000, 2)), X_target=Y)
    buffer = ot._state.stream_buffer
    assert buffer.closed and buffer.X.shape[0] == 0 and ot._state.average is not None
    X_fresh = rng.normal(size=(100_000, 2))
    before = _fresh_tv(ot, X_fresh)
    ot.partial_fit(rng.normal(size=(1000, 2)))  # an averaged step: the map barely moves
    assert _fresh_tv(ot, X_fresh) <= 1.1 * before + 0.005
    assert ot.n_samples_seen_ == 4000
