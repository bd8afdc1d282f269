"""Callbacks for :class:`~skot.OTNetTransport`: progress feedback and budgets.

A callback is any callable ``callback(estimator, record)``, called after every evaluation of
a fit with the estimator and a :class:`StepRecord`; a true return value stops the fit. It may
also have ``on_fit_begin(estimator, max_steps)`` and ``on_fit_end(estimator)`` methods, called
when each ``fit`` or ``partial_fit`` starts and ends (``on_fit_end`` also after an error).
Pass them as ``OTNetTransport(callbacks=[...])``.

Examples
--------
>>> import numpy as np
>>> from skot import OTNetTransport
>>> from skot.callbacks import TimeBudget
>>> seen = []
>>> def log(estimator, record):
...     seen.append(round(record.error, 3))
>>> X = np.random.default_rng(0).normal(size=(500, 2))
>>> ot = OTNetTransport(height="vector", callbacks=[log, TimeBudget(60)], random_state=0)
>>> ot = ot.fit(X, X_target=X[:20])
>>> len(seen) == len(ot.marginal_error_curve_)
True
"""

from __future__ import annotations

import contextlib
import sys
import time
from numbers import Real

from ._solver import StepRecord

__all__ = ["ProgressBar", "StepRecord", "TimeBudget"]


class ProgressBar:
    """Show the progress of each fit: steps taken out of ``max_iter``, and the marginal error.

    A ``tqdm`` bar when tqdm is installed (the ``progress`` extra), a line rewritten in place
    otherwise. It never changes the fit.

    Parameters
    ----------
    enabled : bool, default=True
        ``False`` prints nothing (convenient for a command-line ``--no-progress``).
    file : file-like, default=None
        Where to write; ``None`` is ``sys.stderr`` at the time of the fit.
    use_tqdm : bool, default=None
        ``None`` uses tqdm when it can be imported; ``False`` always writes the plain line.
    """

    def __init__(self, *, enabled=True, file=None, use_tqdm=None):
        self.enabled = enabled
        self.file = file
        self.use_tqdm = use_tqdm
        self._bar = None
        self._line = False

    def on_fit_begin(self, estimator, max_steps: int) -> None:
        if not self.enabled:
            return
        self._total = max_steps
        self._base = getattr(estimator, "n_iter_", 0)
        self._done = 0
        self._out = self.file or sys.stderr
        tqdm = None
        if self.use_tqdm is not False:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
        if tqdm is not None:
            self._bar = tqdm(total=max_steps, desc="fitting", unit="step", file=self._out)

    def __call__(self, estimator, record: StepRecord) -> None:
        if not self.enabled:
            return
        done = min(max(record.step - self._base, 0), self._total)
        step, self._done = done - self._done, done
        text = f"marginal error {record.error:.4f}"
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(step)
            return
        width = 30
        filled = int(width * done / max(self._total, 1))
        bar = "#" * filled + "-" * (width - filled)
        print(f"\rfitting [{bar}] {done}/{self._total} steps, {text}", end="", file=self._out)
        self._out.flush()
        self._line = True

    def on_fit_end(self, estimator) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._line:
            print(file=self._out, flush=True)
            self._line = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(enabled={self.enabled!r})"


class TimeBudget:
    """Stop a fit once it has run for ``max_time`` seconds (checked after each evaluation).

    The fit keeps the heights reached so far; ``converged_`` says whether they met ``tol``.

    Parameters
    ----------
    max_time : float
        Seconds per call of ``fit`` or ``partial_fit``, > 0.
    """

    def __init__(self, max_time):
        if isinstance(max_time, bool) or not isinstance(max_time, Real) or not max_time > 0:
            raise ValueError(f"max_time must be a number of seconds > 0, got {max_time!r}")
        self.max_time = max_time

    def on_fit_begin(self, estimator, max_steps: int) -> None:
        self._start = time.perf_counter()

    def __call__(self, estimator, record: StepRecord) -> bool:
        return time.perf_counter() - self._start >= self.max_time

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_time={self.max_time!r})"


def _print_step(estimator, record: StepRecord) -> None:
    """The ``verbose`` line of one evaluation (on stdout, as scikit-learn's estimators)."""
    print(
        f"Iteration {record.step}, batch {record.batch_size}, learning rate "
        f"{record.learning_rate:.2e}, marginal error {record.error:.5f}, energy "
        f"{record.energy:.6f}, {record.seconds:.1f}s",
        file=sys.stdout,
        flush=True,
    )


@contextlib.contextmanager
def chain_callbacks(estimator, callbacks, verbose: int, max_steps: int):
    """The solver's one callback for a fit of ``estimator``: the ``verbose`` line, then each
    of ``callbacks``, told of the fit's start and end (``on_fit_end`` also after an error).

    Yields ``None`` when there is nothing to call.
    """
    chain = list(callbacks or [])
    if verbose:
        chain.insert(0, _print_step)
    for cb in chain:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables, got {cb!r}")
    for cb in chain:
        getattr(cb, "on_fit_begin", lambda *_: None)(estimator, max_steps)

    def callback(record):
        # Every callback sees every record, even when an earlier one asks to stop.
        return any([bool(cb(estimator, record)) for cb in chain])

    try:
        yield callback if chain else None
    finally:
        for cb in chain:
            getattr(cb, "on_fit_end", lambda *_: None)(estimator)
