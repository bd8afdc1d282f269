"""Streams of source samples for :meth:`~skot.OTNetTransport.fit_stream`: a sampler, an
iterable of batches or a torch ``DataLoader``, each batch given to ``partial_fit``.

Every batch is checked before it reaches the estimator, and a bad one is a clear error that
names the source and the batch: a batch that is not a 2-D array of numbers, a sampler that
returns another number of rows than asked, a batch with another number of features than the
first, NaN or infinite values, or a dtype that differs from the first batch's. Batches are not
cast: one source yields one dtype (a change, float32 then float64 or floats then integers,
usually means two code paths in the sampler, and is refused). Float and integer dtypes are
accepted; ``partial_fit`` computes in float64 on the host and float32 on the device.
"""

from __future__ import annotations

import math
import time
from numbers import Integral, Real

import numpy as np
import torch

from ._solver import newton_obstacles
from ._stream import FIRST_SOLVE_ROWS_PER_TARGET

__all__ = ["fit_stream", "iter_batches"]


def _positive(value, name: str, kind: type, allow_none: bool = True):
    if value is None and allow_none:
        return None
    ok = isinstance(value, kind) and not isinstance(value, bool) and value > 0
    if not ok or (kind is Real and not math.isfinite(value)):
        what = "an integer" if kind is Integral else "a number"
        raise ValueError(f"{name} must be {what} > 0 or None, got {value!r}")
    return value


def _generator(random_state) -> np.random.Generator:
    """The sampler's ``rng``: a NumPy generator seeded from the estimator's ``random_state``."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    return np.random.default_rng(random_state)


def _as_array(batch, where: str) -> np.ndarray:
    """One batch as a 2-D NumPy array of finite numbers, or a clear error naming ``where``."""
    if isinstance(batch, tuple | list) and batch and _is_array(batch[0]):
        batch = batch[0]  # (X, y, ...) as a DataLoader yields
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    elif isinstance(batch, dict | str | bytes) or batch is None or callable(batch):
        raise TypeError(f"{where} is a {type(batch).__name__}, not an array of source rows")
    try:
        array = np.asarray(batch)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where} is not an array of numbers: {exc}") from exc
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{where} has dtype {array.dtype}; expected numbers (float or int)")
    if array.ndim != 2:
        raise ValueError(
            f"{where} has shape {array.shape}; expected a 2-D array (n_rows, n_features)"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{where} has no rows")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(f"{where} contains {bad} NaN or infinite values")
    return array


def _is_array(obj) -> bool:
    return isinstance(obj, np.ndarray | torch.Tensor)


def iter_batches(source, *, batch_size: int, max_samples=None, rng=None):
    """The batches of ``source`` as checked 2-D NumPy arrays, at most ``max_samples`` rows.

    A callable is a sampler ``source(n, rng)`` asked for ``batch_size`` rows at a time (fewer
    for the last, to meet ``max_samples``); anything else is iterated over, its batches used
    as they come (the last truncated to ``max_samples``). Every batch must have the first
    one's number of features and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> def sampler(n, rng):
    ...     return rng.normal(size=(n, 2))
    >>> batches = iter_batches(sampler, batch_size=300, max_samples=700,
    ...                        rng=np.random.default_rng(0))
    >>> [b.shape[0] for b in batches]
    [300, 300, 100]
    """
    sampler = callable(source) and not _is_array(source)
    if sampler:
        name = f"the sampler {getattr(source, '__name__', type(source).__name__)}"
        batches = None
    else:
        name = f"the source {type(source).__name__}"
        try:
            batches = iter(source)
        except TypeError:
            raise TypeError(
                f"source must be a sampler source(n, rng), an iterable of batches or a "
                f"DataLoader; got {type(source).__name__}"
            ) from None
        if _is_array(source):
            raise TypeError(
                "source is one array; pass it to fit or partial_fit, or a list of batches here"
            )
    seen, first, k = 0, None, 0
    while max_samples is None or seen < max_samples:
        want = batch_size if max_samples is None else min(batch_size, max_samples - seen)
        if sampler:
            where = f"batch {k} of {name}"
            batch = _as_array(source(want, rng), where)
            if batch.shape[0] != want:
                raise ValueError(f"{where} has {batch.shape[0]} rows; {want} were asked for")
        else:
            try:
                item = next(batches)
            except StopIteration:
                return
            where = f"batch {k} of {name}"
            batch = _as_array(item, where)
            if max_samples is not None:
                batch = batch[: max_samples - seen]
        if first is None:
            first = batch
        elif batch.shape[1] != first.shape[1]:
            raise ValueError(
                f"{where} has {batch.shape[1]} features; the first batch had {first.shape[1]}"
            )
        elif batch.dtype != first.dtype:
            raise TypeError(
                f"{where} has dtype {batch.dtype}; the first batch had {first.dtype} (one "
                "source must yield one dtype)"
            )
        seen += batch.shape[0]
        k += 1
        yield batch


class _Forward:
    """The estimator's callbacks for the length of a stream: each ``partial_fit`` calls this
    one (with no ``on_fit_begin``), which calls theirs and remembers a request to stop.

    With a ``deadline`` (a ``time.perf_counter`` value) it also asks to stop where the next
    step would end past it: a solve of the stream's buffer then ends at this evaluation,
    with the heights it has reached. The next step is predicted to take as long as the last
    one of this call (``step_guess`` before one, from the buffer's last solve), and what
    follows the last evaluation of a call (the result, the network distilled from the
    heights, the fitted attributes) as long as it did in the previous call (``tail``)."""

    def __init__(self, callbacks, deadline=None):
        self.callbacks = callbacks
        self.deadline = deadline
        self.stop = False
        self.step_guess = 0.0
        self.tail = 0.0
        self.last = None  # (record.step, time) of this call's last evaluation

    def __call__(self, estimator, record):
        stop = any([bool(cb(estimator, record)) for cb in self.callbacks])
        now = time.perf_counter()
        step = self.step_guess
        if self.last is not None and record.step == self.last[0] + 1:
            step = now - self.last[1]
        self.last = (record.step, now)
        if self.deadline is not None and now + step + self.tail >= self.deadline:
            stop = True
        self.stop = self.stop or stop
        return stop

    def begin_call(self, guess: float) -> None:
        """Before a ``partial_fit``: ``guess`` seconds for its first step."""
        self.step_guess, self.last = guess, None

    def end_call(self) -> None:
        """After a ``partial_fit``: the seconds since its last evaluation are the tail."""
        if self.last is not None:
            self.tail = time.perf_counter() - self.last[1]


def _first_rows(estimator, X_target) -> int:
    """Rows for the first ``partial_fit`` of a stream from scratch: where the stream keeps its
    rows for Newton steps (:mod:`._stream`), the rows its first solve needs, so that the first
    call already ends with a solved map (a few Adam steps on smaller chunks would only be
    undone by it); else one batch."""
    free = estimator.height in ("vector", "residual")
    if X_target is None or newton_obstacles(free, estimator.epsilon, estimator.bandwidth):
        return 0
    return FIRST_SOLVE_ROWS_PER_TARGET * len(X_target)


#: Share of the time left that fit_stream plans its last solve of the buffer into, and the
#: growth of the buffer since its last solve below which a last solve is not worth it.
_SAFETY = 0.9
_LAST_GROWTH = 1.25


def _solves(state):
    """The stream's buffer solves so far, as ``(rows solved, solve rate)`` (changes with
    each solve), or ``None``."""
    buffer = getattr(state, "stream_buffer", None)
    return None if buffer is None else (buffer.n_solved, buffer.solve_rate, state.step)


def _step_guess(state, rows: int) -> float:
    """Seconds of one Newton step on the buffer once ``rows`` more have joined it (0: no
    solve to predict from)."""
    buffer = getattr(state, "stream_buffer", None)
    if buffer is None or buffer.closed:
        return 0.0
    return buffer.seconds(buffer.n_rows + rows, 2)


def _plan(state, rows: int, deadline, gather_rate: float, now: float, tail: float = 0.0) -> str:
    """What the next batch of a stream with a deadline does with the buffer (:mod:`._stream`):
    ``"go"`` (as it would: solve when the buffer has doubled), ``"hold"`` (keep the rows
    for a larger last solve: a doubling solve now would leave no time for one twice its
    size), ``"solve"`` (the last solve: with one more batch the buffer's solve would no longer
    fit in the time left, and the buffer has grown by a quarter since the map's solve) or
    ``"end"`` (not even a solve of the buffer fits, or it would add too few rows: the map
    stays).
    Solve times are predicted by the buffer (its last solve's seconds per row of a pass and
    of a Newton step, and the steps a solve from an earlier solve's heights takes); ``tail``
    seconds at the end of a call (its result and attributes) are kept free."""
    buffer = getattr(state, "stream_buffer", None)
    if deadline is None or buffer is None or buffer.closed or not buffer.solve_rate:
        return "go"
    left, solve, g = deadline - now - tail, buffer.predict, gather_rate
    n = buffer.n_rows + rows
    if solve(n) > left and buffer.n_solved:
        return "end"
    if solve(n + rows) + g * rows > _SAFETY * left:
        # A last solve on barely more rows than the map's would spend its time for nothing.
        worth = not buffer.n_solved or n >= _LAST_GROWTH * buffer.n_solved
        return "solve" if worth else "end"
    if solve(n) + g * n + solve(2 * n) > _SAFETY * left:
        return "hold"
    return "go"


def _gather(first, batches, rows: int, deadline):
    """``first`` and the batches after it until they hold ``rows`` rows (or the source ends,
    or ``deadline`` passes), stacked; and the batch after them (``None``: the source ended)."""
    parts, n = [first], first.shape[0]
    following = next(batches, None)
    while following is not None and n < rows:
        if deadline is not None and time.perf_counter() >= deadline:
            break
        parts.append(following)
        n += following.shape[0]
        following = next(batches, None)
    return (np.concatenate(parts) if len(parts) > 1 else first), following


def fit_stream(
    estimator,
    source,
    *,
    X_target=None,
    target_weight=None,
    target_ids=None,
    batch_size=None,
    max_samples=None,
    max_time=None,
):
    """Fit ``estimator`` on a stream: every batch of ``source`` goes to ``partial_fit``.

    See :meth:`~skot.OTNetTransport.fit_stream`. Unless ``warm_start``, the fitted state is
    cleared first, so the first batch initialises the model as ``fit`` would. The estimator's
    callbacks hear of one fit: ``on_fit_begin`` once (with the number of batches expected,
    when known), every step record of every batch, ``on_fit_end`` once; one returning True
    ends the stream after its batch. With free heights the last batch also solves the
    stream's buffer (:mod:`._stream`), so that the map is that of every row seen.

    Examples
    --------
    >>> import numpy as np
    >>> from skot import OTNetTransport
    >>> def sampler(n, rng):
    ...     return rng.normal(size=(n, 2))
    >>> Y = np.random.default_rng(1).normal(size=(20, 2))
    >>> ot = OTNetTransport(height="vector", random_state=0)
    >>> ot = ot.fit_stream(sampler, X_target=Y, batch_size=1000, max_samples=5000)
    >>> ot.n_samples_seen_
    5000
    """
    batch_size = _positive(batch_size, "batch_size", Integral) or estimator.batch_size
    max_samples = _positive(max_samples, "max_samples", Integral)
    max_time = _positive(max_time, "max_time", Real)
    if callable(source) and not _is_array(source) and max_samples is max_time is None:
        raise ValueError(
            "a sampler never ends: give fit_stream max_samples or max_time (or pass an "
            "iterable of batches)"
        )
    saved = dict(estimator.__dict__)
    if not estimator.warm_start or not hasattr(estimator, "_state"):
        for attr in ("_state", "n_iter_"):
            estimator.__dict__.pop(attr, None)
    rng = _generator(estimator.random_state)
    batches = iter_batches(source, batch_size=batch_size, max_samples=max_samples, rng=rng)
    original = estimator.callbacks
    chain = list(original or [])
    start = time.perf_counter()
    deadline = None if max_time is None else start + max_time
    forward = _Forward(chain, deadline)
    if max_samples is not None:
        expected = -(-max_samples // batch_size)
    else:
        expected = len(source) if hasattr(source, "__len__") and not callable(source) else 0
    began = []
    try:
        for cb in chain:
            getattr(cb, "on_fit_begin", lambda *_: None)(estimator, expected)
            began.append(cb)
        estimator.callbacks = [forward] if chain or deadline is not None else original
        batch = next(batches, None)
        if batch is None:
            raise ValueError(f"the source {type(source).__name__} yielded no batch")
        targets = {"X_target": X_target, "target_weight": target_weight, "target_ids": target_ids}
        first = 0 if hasattr(estimator, "_state") else _first_rows(estimator, X_target)
        # One batch ahead: the last is known as such.
        batch, following = _gather(batch, batches, first, deadline)
        gather_rate = 0.0  # seconds per row of a batch that is only counted, draw included
        while batch is not None:
            t = time.perf_counter()
            state = getattr(estimator, "_state", None)
            plan = _plan(state, batch.shape[0], deadline, gather_rate, t, forward.tail)
            if plan == "end":
                break
            if state is not None:
                state.stream_flush = following is None or plan == "solve"
                state.stream_hold = plan == "hold"
            solves = _solves(state)
            forward.begin_call(_step_guess(state, batch.shape[0]))
            estimator.partial_fit(batch, **targets)
            forward.end_call()
            saved = None  # from here on, the estimator is the stream's
            targets = {}
            if forward.stop or (deadline is not None and time.perf_counter() >= deadline):
                break
            batch, following = following, next(batches, None)
            if _solves(estimator._state) == solves and batch is not None:
                gather_rate = (time.perf_counter() - t) / batch.shape[0]
    except BaseException:
        if saved is not None:  # failed before any batch was learnt: as it was
            estimator.__dict__.clear()
            estimator.__dict__.update(saved)
        raise
    finally:
        estimator.callbacks = original
        for cb in began:
            getattr(cb, "on_fit_end", lambda *_: None)(estimator)
    return estimator
