"""Callbacks: called after every evaluation, able to stop a fit, and the ready-made ones."""

import io
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from skot import OTNetTransport
from skot.callbacks import ProgressBar, StepRecord, TimeBudget


@pytest.fixture
def data(rng):
    X = rng.normal(size=(2000, 2))
    return X, X[:50]


def test_callbacks_see_every_evaluation(data):
    X, Y = data
    records, events = [], []

    class Spy:
        def on_fit_begin(self, estimator, max_steps):
            events.append(("begin", max_steps))

        def __call__(self, estimator, record):
            assert isinstance(record, StepRecord)
            records.append(record)

        def on_fit_end(self, estimator):
            events.append(("end", estimator.n_iter_))

    ot = OTNetTransport(height="vector", max_iter=300, callbacks=[Spy()], random_state=0)
    ot.fit(X, X_target=Y)
    assert ot.converged_
    assert [(r.step, r.error) for r in records] == ot.marginal_error_curve_
    assert events == [("begin", 300), ("end", ot.n_iter_)]
    assert records[-1].error <= ot.tol and records[-1].exact


def test_a_callback_stops_the_fit_without_a_warning(data):
    X, Y = data
    calls = []

    def stop_at_three(estimator, record):
        calls.append(record.step)
        return len(calls) == 3

    ot = OTNetTransport(
        height="network", hidden_layer_sizes=(8,), tol=0.0, callbacks=[stop_at_three]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ot.fit(X, X_target=Y)
    assert len(calls) == 3 and not ot.converged_
    assert ot.n_iter_ == calls[-1]
    # Every fitted attribute is there and consistent with the heights reached.
    np.testing.assert_array_equal(ot.predict_index(X), np.argmax(X @ ot.target_.T + ot.heights_, 1))


def test_callback_results_are_the_same_as_without(data):
    X, Y = data
    plain = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    bar = ProgressBar(file=io.StringIO(), use_tqdm=False)
    shown = OTNetTransport(height="vector", random_state=0, callbacks=[bar]).fit(X, X_target=Y)
    np.testing.assert_array_equal(plain.heights_, shown.heights_)


def test_progress_bar_writes_a_line_and_is_silent_when_disabled(data, capsys):
    X, Y = data
    out = io.StringIO()
    OTNetTransport(
        height="vector", callbacks=[ProgressBar(file=out, use_tqdm=False)], random_state=0
    ).fit(X, X_target=Y)
    text = out.getvalue()
    assert "fitting [" in text and "marginal error" in text and text.endswith("\n")
    OTNetTransport(height="vector", callbacks=[ProgressBar(enabled=False)], random_state=0).fit(
        X, X_target=Y
    )
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_progress_bar_uses_tqdm_when_installed(data):
    pytest.importorskip("tqdm")
    X, Y = data
    out = io.StringIO()
    OTNetTransport(height="vector", callbacks=[ProgressBar(file=out)], random_state=0).fit(
        X, X_target=Y
    )
    assert "step" in out.getvalue()


def test_time_budget_stops_a_long_fit(data):
    X, Y = data
    ot = OTNetTransport(
        height="network",
        hidden_layer_sizes=(8,),
        tol=0.0,
        max_iter=100_000,
        callbacks=[TimeBudget(0.5)],
        random_state=0,
    )
    ot.fit(X, X_target=Y)
    assert not ot.converged_ and 0 < ot.n_iter_ < 100_000


@pytest.mark.parametrize("bad", [0, -1.0, "10", True])
def test_time_budget_validates_its_argument(bad):
    with pytest.raises(ValueError, match="max_time"):
        TimeBudget(bad)


def test_callbacks_must_be_callable_and_survive_clone(data):
    X, Y = data
    with pytest.raises(TypeError, match="callbacks must be callables"):
        OTNetTransport(height="vector", callbacks=["not a function"]).fit(X, X_target=Y)
    est = clone(OTNetTransport(callbacks=[TimeBudget(3)]))
    assert isinstance(est.callbacks[0], TimeBudget)


def test_on_fit_end_runs_after_an_error(data):
    X, Y = data
    ended = []

    class Fail:
        def __call__(self, estimator, record):
            raise RuntimeError("boom")

        def on_fit_end(self, estimator):
            ended.append(True)

    ot = OTNetTransport(height="vector", callbacks=[Fail()], random_state=0)
    with pytest.raises(RuntimeError, match="boom"):
        ot.fit(X, X_target=Y)
    assert ended == [True]
    # The estimator is left with the attributes of its last state, not half-updated.
    assert ot.heights_.shape == (Y.shape[0],) and np.isfinite(ot.heights_).all()
