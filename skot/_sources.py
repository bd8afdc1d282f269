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
    one (with no ``on_fit_begin``), which calls theirs and remembers a request to stop."""

    def __init__(self, callbacks):
        self.callbacks = callbacks
        self.stop = False

    def __call__(self, estimator, record):
        stop = any([bool(cb(estimator, record)) for cb in self.callbacks])
        self.stop = self.stop or stop
        return stop


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
    forward = _Forward(chain)
    if max_samples is not None:
        expected = -(-max_samples // batch_size)
    else:
        expected = len(source) if hasattr(source, "__len__") and not callable(source) else 0
    start = time.perf_counter()
    began = []
    last_call = 0.0
    try:
        for cb in chain:
            getattr(cb, "on_fit_begin", lambda *_: None)(estimator, expected)
            began.append(cb)
        estimator.callbacks = [forward] if chain else original
        batch = next(batches, None)
        if batch is None:
            raise ValueError(f"the source {type(source).__name__} yielded no batch")
        targets = {"X_target": X_target, "target_weight": target_weight, "target_ids": target_ids}
        while batch is not None:
            following = next(batches, None)  # one batch ahead: the last is known as such
            t = time.perf_counter()
            out_of_time = max_time is not None and t + last_call - start >= max_time
            state = getattr(estimator, "_state", None)
            if state is not None:
                state.stream_flush = following is None or out_of_time
            estimator.partial_fit(batch, **targets)
            saved = None  # from here on, the estimator is the stream's
            targets = {}
            last_call = time.perf_counter() - t
            if forward.stop or (max_time is not None and time.perf_counter() - start >= max_time):
                break
            batch = following
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
