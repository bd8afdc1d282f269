"""fit_stream: a sampler, an iterable of batches or a DataLoader feeds partial_fit."""

import numpy as np
import pytest
import torch

from skot import OTNetTransport

SMALL_NET = {"hidden_layer_sizes": (32,)}


def normal(n, rng):
    return rng.normal(size=(n, 2))


def _fresh_tv(ot, X_fresh):
    return -ot.score(X_fresh)


def test_a_sampler_fit_respects_max_samples_and_is_seeded(rng):
    asked = []

    def sampler(n, rng):
        asked.append(n)
        return rng.normal(size=(n, 2))

    Y = rng.normal(size=(20, 2))
    ot = OTNetTransport(height="vector", random_state=0)
    ot.fit_stream(sampler, X_target=Y, batch_size=1000, max_samples=4500)
    assert asked == [1000, 1000, 1000, 1000, 500]
    assert ot.n_samples_seen_ == 4500
    assert ot._state.stream_buffer.n_solved == 4500  # the last batch solved every row
    again = OTNetTransport(height="vector", random_state=0)
    again.fit_stream(normal, X_target=Y, batch_size=1000, max_samples=4500)
    np.testing.assert_array_equal(again.heights_, ot.heights_)


def test_a_seeded_sampler_stream_reaches_the_fit_quality(rng):
    """Free heights: the stream's rows are solved by Newton steps, as a fit would."""
    Y = rng.uniform(-2, 2, size=(50, 2))
    X_fresh = rng.normal(size=(200_000, 2))
    ot = OTNetTransport(height="vector", tol=1e-3, random_state=0)
    ot.fit_stream(normal, X_target=Y, batch_size=1000, max_samples=20_000)
    X = np.random.default_rng(7).normal(size=(20_000, 2))
    fit = OTNetTransport(height="vector", tol=1e-3, random_state=0).fit(X, X_target=Y)
    assert _fresh_tv(ot, X_fresh) <= 1.3 * _fresh_tv(fit, X_fresh)


def test_iterables_tuples_and_dataloaders(rng):
    Y = rng.normal(size=(10, 2))
    X = rng.normal(size=(3000, 2)).astype(np.float32)
    batches = [X[:1000], torch.from_numpy(X[1000:2000]), (X[2000:], np.zeros(1000))]
    ot = OTNetTransport(height="vector", random_state=0).fit_stream(batches, X_target=Y)
    assert ot.n_samples_seen_ == 3000
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(X), torch.zeros(3000)), batch_size=700
    )
    ot.fit_stream(loader, X_target=Y, max_samples=2000)  # the last batch is cut at 2000
    assert ot.n_samples_seen_ == 2000
    assert ot.transform(X).dtype == np.float32


def test_warm_start_continues_the_stream(rng):
    Y = rng.normal(size=(10, 2))
    ot = OTNetTransport(height="vector", warm_start=True, random_state=0)
    ot.fit_stream(normal, X_target=Y, batch_size=500, max_samples=1000)
    ot.fit_stream(normal, batch_size=500, max_samples=1000)
    assert ot.n_samples_seen_ == 2000
    ot.set_params(warm_start=False)
    ot.fit_stream(normal, X_target=Y, batch_size=500, max_samples=1000)
    assert ot.n_samples_seen_ == 1000


def test_callbacks_hear_one_fit_and_can_stop_it(rng):
    events = []

    class Recorder:
        def on_fit_begin(self, estimator, max_steps):
            events.append(("begin", max_steps))

        def __call__(self, estimator, record):
            events.append("record")
            return True  # stop after the first batch

        def on_fit_end(self, estimator):
            events.append("end")

    Y = rng.normal(size=(10, 2))
    callbacks = [Recorder()]
    ot = OTNetTransport(height="vector", callbacks=callbacks, random_state=0)
    ot.fit_stream(normal, X_target=Y, batch_size=500, max_samples=5000)
    assert events[0] == ("begin", 10) and events[-1] == "end" and "record" in events
    assert events.count("end") == 1 and ot.n_samples_seen_ == 500
    assert ot.callbacks is callbacks  # the parameter is left as it was


def test_max_time_stops_between_batches(rng):
    Y = rng.normal(size=(10, 2))
    ot = OTNetTransport(height="vector", random_state=0)
    ot.fit_stream(normal, X_target=Y, batch_size=500, max_time=1e-9)
    assert ot.n_samples_seen_ == 500  # every call outlasts a nanosecond: one batch


def _wrong_rows(n, rng):
    return rng.normal(size=(n + 1, 2))


def _flat(n, rng):
    return rng.normal(size=n)


def _nan(n, rng):
    x = rng.normal(size=(n, 2))
    x[3, 1] = np.nan
    return x


def _words(n, rng):
    return np.full((n, 2), "a")


def _dtype_changes(n, rng, calls=[]):  # noqa: B006 - counts the calls
    calls.append(n)
    x = rng.normal(size=(n, 2))
    return x if len(calls) % 2 else x.astype(np.float32)


def _features_change(n, rng, calls=[]):  # noqa: B006
    calls.append(n)
    return rng.normal(size=(n, 2 if len(calls) % 2 else 3))


@pytest.mark.parametrize(
    ("sampler", "error", "match"),
    [
        (_wrong_rows, ValueError, r"batch 0 of the sampler _wrong_rows has 101 rows; 100 were"),
        (_flat, ValueError, r"sampler _flat has shape \(100,\); expected a 2-D"),
        (_nan, ValueError, r"sampler _nan contains 1 NaN or infinite"),
        (_words, TypeError, r"sampler _words has dtype <U1; expected numbers"),
        (_dtype_changes, TypeError, r"batch 1 of the sampler _dtype_changes has dtype float32"),
        (_features_change, ValueError, r"batch 1 of the sampler _features_change has 3 feat"),
        (lambda n, rng: {"x": 1}, TypeError, r"sampler <lambda> is a dict"),
    ],
)
def test_bad_batches_are_clear_errors_naming_the_sampler(rng, sampler, error, match):
    Y = rng.normal(size=(10, 2))
    ot = OTNetTransport(height="vector", random_state=0).fit(rng.normal(size=(500, 2)), X_target=Y)
    heights = ot.heights_.copy()
    with pytest.raises(error, match=match):
        ot.fit_stream(sampler, X_target=Y, batch_size=100, max_samples=300)
    if "batch 0" in match or "batch 1" not in match:
        np.testing.assert_array_equal(ot.heights_, heights)  # failed first batch: as it was


def test_bad_sources_and_budgets(rng):
    ot = OTNetTransport(height="vector")
    with pytest.raises(ValueError, match="a sampler never ends: give fit_stream max_samples"):
        ot.fit_stream(normal)
    with pytest.raises(TypeError, match="source must be a sampler"):
        ot.fit_stream(3, max_samples=10)
    with pytest.raises(TypeError, match="source is one array"):
        ot.fit_stream(rng.normal(size=(10, 2)))
    with pytest.raises(ValueError, match="max_samples must be an integer > 0"):
        ot.fit_stream(normal, max_samples=0)
    with pytest.raises(ValueError, match="max_time must be a number > 0"):
        ot.fit_stream(normal, max_time=float("nan"))
    with pytest.raises(ValueError, match="the source list yielded no batch"):
        ot.fit_stream([])
    with pytest.raises(TypeError, match="batch 1 of the source list has dtype object"):
        ot.fit_stream([rng.normal(size=(10, 2)), np.array([[1, None]], dtype=object)])


def test_fit_stream_on_each_device(rng, device):
    Y = rng.normal(size=(10, 2))
    ot = OTNetTransport(height="residual", hidden_layer_sizes=(16,), device=device, random_state=0)
    ot.fit_stream(normal, X_target=Y, batch_size=500, max_samples=1500)
    assert ot.device_.type == device and ot.n_samples_seen_ == 1500


class _Clock:
    """A fake ``time`` for skot._sources: it moves only when a step record says so."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def _ten_second_steps(monkeypatch, seen, what):
    """A fake clock for skot._sources and a callback that records ``what(clock, record)`` at
    each evaluation, then moves the clock by 10 s (every Newton step 'takes' 10 s)."""
    import skot._sources

    clock = _Clock()
    monkeypatch.setattr(skot._sources, "time", clock)

    def slow_step(estimator, record):
        seen.append(what(clock, record))
        clock.now += 10.0

    return clock, slow_step


def test_max_time_cuts_a_solve_short_and_keeps_what_it_learnt(rng, monkeypatch):
    """Each Newton step of the first solve 'takes' 10 s: a 15 s budget ends the solve after
    its second step, with a map better than where it started; a warm stream then takes the
    cut solve up again."""
    errors = []
    _, slow_step = _ten_second_steps(monkeypatch, errors, lambda clock, record: record.error)
    Y = rng.uniform(-2, 2, size=(100, 2))
    ot = OTNetTransport(height="vector", tol=1e-3, callbacks=[slow_step], random_state=0)
    ot.fit_stream(normal, X_target=Y, batch_size=300, max_time=15)
    assert len(errors) == 2  # cut at the first evaluation past the budget
    assert ot.n_samples_seen_ == 1200  # the first call gathers 10 rows per target
    assert ot.marginal_error_ < errors[0]  # the steps taken are kept
    assert ot._state.stream_buffer.n_solved == 0  # the solve is not finished
    ot.set_params(warm_start=True, callbacks=None)
    ot.fit_stream(normal, batch_size=300, max_samples=300)
    assert ot._state.stream_buffer.n_solved == 1500  # taken up again with the new rows
    assert ot.marginal_error_ < errors[-1]


def test_solve_times_are_predicted_from_the_last_two_solves():
    """A step costs a fixed part (the system over the targets) plus a part per row: the
    line through two solves' timings, not the last solve's seconds per row."""
    import torch

    from skot._stream import _Buffer

    buffer = _Buffer(torch.zeros(0, 2), torch.zeros(0))
    buffer.timings = [(10_000, 0.1, 0.3)]
    assert buffer.seconds(40_000, 2) == pytest.approx(1.2)  # one solve: its rate
    buffer.timings.append((20_000, 0.2, 0.4))  # 0.2 s fixed + 1e-5 s per row
    assert buffer.seconds(80_000, 2) == pytest.approx(1.0)
    assert buffer.seconds(80_000, 1) == pytest.approx(0.8)
    buffer.timings.append((40_000, 0.2, 0.1))  # noisy: a flat line, not under half the rate
    assert buffer.seconds(80_000, 2) == pytest.approx(0.1)
    buffer.warm_steps, buffer.n_last, buffer.n_held = 3, 40_000, 40_000
    assert buffer.predict(80_000) == pytest.approx(0.2 + 3 * 0.1)
    # A first pass is over the rows added since the last solve (the fourth entry), whose
    # rows kept their candidates: 0.05 s fixed + 5e-6 s per new row.
    buffer.timings = [(20_000, 0.1, 0.3, 10_000), (40_000, 0.2, 0.5, 30_000)]
    assert buffer.seconds(60_000, 1) == pytest.approx(0.35)
    assert buffer.predict(80_000) == pytest.approx(0.25 + 3 * 0.9)


def test_max_time_is_not_overrun_by_a_step_that_would_not_fit(rng, monkeypatch):
    """Each Newton step 'takes' 10 s: with 25 s, the step after the second evaluation would
    end past the budget, so the solve stops there (at 20 s) instead of at 30 s."""
    seen = []
    clock, slow_step = _ten_second_steps(monkeypatch, seen, lambda clock, record: clock.now)
    Y = rng.uniform(-2, 2, size=(100, 2))
    ot = OTNetTransport(height="vector", tol=1e-4, callbacks=[slow_step], random_state=0)
    ot.fit_stream(normal, X_target=Y, batch_size=300, max_time=25)
    assert len(seen) == 2 and clock.now == 20.0  # the third step would have ended at 30 s


def test_forward_predicts_the_next_step_and_the_end_of_a_call(monkeypatch):
    """The stream's callback stops where the last step's duration plus the end of a call
    (measured after the previous call) would cross the deadline."""
    from types import SimpleNamespace

    import skot._sources
    from skot._sources import _Forward

    clock = _Clock()
    monkeypatch.setattr(skot._sources, "time", clock)
    forward = _Forward([], deadline=10.0)

    def record(step):
        return SimpleNamespace(step=step)

    forward.begin_call(guess=3.0)
    clock.now = 6.0
    assert not forward(None, record(1))  # 6 + 3 (the guess) < 10
    clock.now = 7.0
    assert not forward(None, record(2))  # 7 + 1 (the last step) < 10
    clock.now = 8.5
    forward.end_call()  # 1.5 s after the last evaluation: the end of a call
    forward.begin_call(guess=0.5)
    assert forward(None, record(3))  # 8.5 + 0.5 + 1.5 >= 10
    assert forward.stop


def test_buffer_chunks_are_stacked_once():
    import torch

    from skot._stream import _Buffer

    buffer = _Buffer(torch.zeros(0, 2), torch.zeros(0))
    for k in range(3):
        buffer.add(torch.full((k + 1, 2), float(k)), torch.ones(k + 1))
    assert buffer.n_rows == 6 and buffer.X.shape[0] == 0
    stacked = buffer.stacked()
    assert stacked is buffer and buffer.parts == [] and buffer.n_rows == 6
    assert buffer.X[:, 0].tolist() == [0, 1, 1, 2, 2, 2] and buffer.w.shape == (6,)


def test_a_stream_from_scratch_solves_its_first_rows_at_once(rng):
    """The first partial_fit of a buffered stream gets the rows of a first solve (10 per
    target), so no Adam steps on smaller chunks come before it, with residual heights too."""
    newton = []

    def record(estimator, rec):
        newton.append(rec.temperature is not None)  # Adam steps have no temperature

    Y = rng.uniform(-2, 2, size=(250, 2))
    X_fresh = rng.normal(size=(200_000, 2))
    for height in ("vector", "residual"):
        newton.clear()
        ot = OTNetTransport(height=height, callbacks=[record], random_state=0, **SMALL_NET)
        ot.fit_stream(normal, X_target=Y, batch_size=1000, max_samples=6000)
        assert newton and all(newton)  # from the first step on
        assert ot.n_samples_seen_ == 6000
        assert _fresh_tv(ot, X_fresh) < 0.15  # noise of 6,000 rows: 0.4 sqrt(m / n) ~ 0.08


def test_the_budget_plan_holds_then_sizes_the_last_solve():
    """fit_stream's plan near a deadline, from the last solve's seconds per row: a first
    pass 0.2 ms per row added since that solve (its rows keep their candidates), a Newton
    step 0.2 ms per row, 4 steps."""
    from types import SimpleNamespace

    from skot._sources import _plan
    from skot._stream import _Buffer

    def state(rows, solved, warm_steps=4):
        buffer = _Buffer(np.zeros((rows, 2)), np.ones(rows), n_solved=solved)
        buffer.solve_rate, buffer.timings = 1e-3, [(solved, 2e-4 * solved, 2e-4 * solved)]
        buffer.warm_steps, buffer.n_last, buffer.n_held = warm_steps, solved, solved
        return SimpleNamespace(stream_buffer=buffer)

    # 100 s left: doubling to 2,000 rows (1.8 s) leaves time for a solve twice that size.
    assert _plan(state(1900, 1000), 100, 100.0, 0.0, 0.0) == "go"
    # 10 s left: a solve of 4,000 rows now (3.6 s) would leave too little for one of 8,000
    # (9.2 s, one step more): keep the rows.
    assert _plan(state(3900, 2000), 100, 10.0, 0.0, 0.0) == "hold"
    # 4 s left: one more batch and the buffer's solve would not fit: the last solve.
    assert _plan(state(3900, 2000), 100, 4.0, 0.0, 0.0) == "solve"
    # ... and the same with 4.5 s left of which the end of a call takes 0.5 s.
    assert _plan(state(3900, 2000), 100, 4.5, 0.0, 0.0, tail=0.5) == "solve"
    # 3 s left: not even a solve of the buffer fits: the map stays.
    assert _plan(state(3900, 2000), 100, 3.0, 0.0, 0.0) == "end"
    # A solve that took 14 steps (from scratch, say) does not make the next take as many:
    # with no warm solve measured yet, 4 are expected.
    assert _plan(state(3900, 2000, warm_steps=0), 100, 4.0, 0.0, 0.0) == "solve"
    # A buffer four times the last solve's rows needs one step more: 9.2 s for 8,000 rows.
    assert _plan(state(7900, 2000), 100, 10.0, 0.0, 0.0) == "solve"
    assert _plan(state(7900, 2000), 100, 9.0, 0.0, 0.0) == "end"
    # A last solve of the rows of the map's solve and a few more is not worth its time.
    assert _plan(state(2300, 2000), 100, 2.3, 0.0, 0.0) == "end"
    assert _plan(state(2600, 2000), 100, 2.6, 0.0, 0.0) == "solve"
    # No deadline, or no solve yet to predict from: as the buffer would.
    assert _plan(state(3900, 2000), 100, None, 0.0, 0.0) == "go"
    assert _plan(None, 100, 3.0, 0.0, 0.0) == "go"
