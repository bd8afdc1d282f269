"""Streams: ``partial_fit``'s solver (pure torch).

A converged fit counts as its sample's rows; each chunk of a stream then takes averaged
stochastic gradient steps (step sizes decaying with the rows seen, the map a rows-weighted
running average of the iterates), and every row joins the running cell counts and sums.

Before the map has converged, free heights (``height="vector"`` or ``"residual"``, hard
cells, no smoothing) keep the stream's rows in a growing buffer and take exact Newton steps
on it each time it has grown by ``_GROWTH`` (from ``FIRST_SOLVE_ROWS_PER_TARGET`` rows per
target on): the map is then that of a fit on every row seen so far. Once the buffer holds
``config.max_eval_samples`` rows it is solved a last time, dropped, and the stream goes on by
averaged steps from there, so memory stays bounded. A network alone (and any chunk before
the buffer is large enough) takes Adam steps with the fit's schedule (:func:`run`).
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import Tensor

from ._kernels import marginal_error
from ._solver import (
    Callback,
    DivergenceError,
    Problem,
    SolverConfig,
    SolverResult,
    SolverState,
    StepRecord,
    _cells,
    _center_residual,
    _source_weights,
    newton_obstacles,
    restart_schedule,
    run,
)

__all__ = [
    "FIRST_SOLVE_ROWS_PER_TARGET",
    "buffer_from_snapshot",
    "buffer_snapshot",
    "start_stream",
    "stop_stream",
    "stream_result",
    "stream_steps",
]

#: Rows per target point that a stream's buffer holds before its first Newton solve (before
#: that, Adam steps on each chunk); ``fit_stream``'s planner starts its budget there.
FIRST_SOLVE_ROWS_PER_TARGET = 10


def start_stream(state: SolverState, result: SolverResult, n_samples: float) -> None:
    """Make a fitted solution the start of a stream: it counts as ``n_samples`` rows seen,
    its cell counts and sums as theirs, and, if it converged, as the average that
    :func:`stream_steps` refines."""
    state.n_seen = float(n_samples)
    state.seen_masses = result.masses * n_samples
    state.seen_sums = result.sums * n_samples
    state.average = None
    # A fit's stream keeps no buffer: its sample is more than the first chunks would be.
    state.stream_buffer = _Buffer(result.sums[:0].float(), result.masses[:0].float(), closed=True)
    if result.converged:
        state.average = {k: p.detach().clone() for k, p in state.model.named_parameters()}


def stop_stream(state: SolverState) -> None:
    """Load the stream's averaged parameters into the model (a ``fit`` continues from what
    the map used) and forget the stream."""
    if state.average is not None:
        with torch.no_grad():
            for name, p in state.model.named_parameters():
                p.copy_(state.average[name])
    state.n_seen, state.average, state.seen_masses, state.seen_sums = 0.0, None, None, None
    state.stream_buffer = None


def _stream_heights(state: SolverState, Y: Tensor) -> Tensor:
    """The map's heights: the average's once there is one, else the model's."""
    with torch.no_grad():
        if state.average is None:
            return state.model(Y)
        return torch.func.functional_call(state.model, state.average, (Y,))


#: Stream schedule: step sizes decay as (batch / rows seen) ** _DECAY_POWER, and a batch moves
#: the averaged map by _SHARE times its share of the rows seen (the choice is measured in the
#: stream benchmark).
_DECAY_POWER = 0.5
_SHARE = 1.0


def stream_steps(
    state: SolverState, problem: Problem, config: SolverConfig, callback: Callback | None = None
) -> SolverResult:
    """One pass over a chunk of a stream: averaged stochastic gradient steps once the map
    has converged (after a converged fit, or once a chunk is within ``tol``), Adam steps with
    the fit's adaptive schedule before.

    The rows of ``problem.source`` are taken in a random order, ``config.batch_size`` at a
    time (every row once). Adam's step sizes decay as ``sqrt(batch_size / n_seen)`` over the
    whole stream, and the map is the running average of the iterates, each weighted by its
    batch's rows: a batch of ``B`` rows moves it by ``B / (n_seen + B)`` of the way to the
    iterate. So a stream continues a converged fit (which counts as its sample's rows) by
    small, ever smaller steps instead of restarting it, and noise averages out as averaged
    SGD prescribes. With free heights only they move (a network, learnt from them, stays).
    Every row's cell, at the iterate's heights, is added to the running counts and sums. The
    callback sees one record per batch; the schedule does not adapt.
    """
    X, Y, nu = problem.source, problem.target, problem.target_weight
    n, m = X.shape[0], Y.shape[0]
    if state.seen_masses is None:
        state.seen_masses = torch.zeros(m, dtype=torch.float64, device=X.device)
        state.seen_sums = torch.zeros(m, X.shape[1], dtype=torch.float64, device=X.device)
    w = _source_weights(problem)
    B = min(config.batch_size, n)
    if state.average is None and _buffers(state, problem, config):
        return _buffer_stream(state, problem, config, callback)
    if state.average is None:
        return _optimise_stream(state, problem, config, -(-n // B), callback)
    order = torch.randperm(n, generator=state.generator, device=X.device)
    free = getattr(state.model, "residual", None)
    start, first_step, stopped = time.perf_counter(), state.step, False
    for r0 in range(0, n, B):
        rows = order[r0 : r0 + B]
        B = rows.shape[0]  # the last batch of the pass may be smaller
        xb, wb = X[rows], w[rows] / w[rows].sum()
        h = state.model(Y)
        batch = _cells(problem, h, config).cell_sums(xb, wb, xb, epsilon=config.epsilon)
        energy = float(batch.potential - (nu * h.detach()).sum())
        if not math.isfinite(energy):
            stop_stream(state)  # the model takes the last (finite) average
            raise DivergenceError(
                f"training diverged at iteration {state.step} (non-finite energy); the last "
                "finite average was kept. Lower learning_rate / height_learning_rate or rescale "
                "the data."
            )
        decay = min(1.0, (config.batch_size / max(state.n_seen, 1.0)) ** _DECAY_POWER)
        for group in state.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * decay
            if free is not None and not any(p is free for p in group["params"]):
                # The free heights carry the solution; the network, learnt from them, stays
                # (fresh Adam steps on its weights would move every height at once).
                group["lr"] = 0.0
        state.optimizer.zero_grad(set_to_none=True)
        ((batch.masses.to(h.dtype) - nu) * h).sum().backward()
        state.optimizer.step()
        _center_residual(state.model, nu)
        share = min(1.0, _SHARE * B / (state.n_seen + B))
        with torch.no_grad():
            for name, p in state.model.named_parameters():
                state.average[name].lerp_(p.detach(), share)
        hard = batch if config.epsilon == 0 else _cells(problem, h, config).cell_sums(xb, wb, xb)
        state.seen_masses += hard.masses.double() * B
        state.seen_sums += hard.sums.double() * B
        state.n_seen += B
        state.step += 1
        state.energies.append(energy)
        state.error = marginal_error(state.seen_masses / state.n_seen, nu)
        state.errors.append((state.step, state.error))
        if callback is not None:
            lr = max(group["lr"] for group in state.optimizer.param_groups)
            seconds = time.perf_counter() - start
            record = StepRecord(state.step, state.error, energy, B, lr, None, False, seconds)
            if callback(record):
                stopped = True
                break
    return stream_result(state, problem, config, state.step - first_step, stopped)


def _optimise_stream(
    state: SolverState,
    problem: Problem,
    config: SolverConfig,
    steps: int,
    callback,
    average: bool = True,
) -> SolverResult:
    """Before the map has converged: Adam steps on the chunk with the fit's adaptive schedule
    (:func:`run`); the chunk's cells at the new heights join the running counts, and (with
    ``average``) the averaging starts once the chunk's marginal error is within ``tol``."""
    first = state.step
    result = run(state, problem, dataclasses.replace(config, solver="adam"), steps, callback)
    n = problem.n_samples
    state.seen_masses += result.masses * n
    state.seen_sums += result.sums * n
    state.n_seen += n
    if result.converged and average:
        state.average = {k: p.detach().clone() for k, p in state.model.named_parameters()}
    state.error = marginal_error(state.seen_masses / state.n_seen, problem.target_weight)
    return stream_result(state, problem, config, state.step - first, result.stopped)


#: The buffer of a stream is solved again once it holds _GROWTH times the rows of its last
#: solve (so the solves cost a few times one solve on the final buffer); its Newton steps stop
#: at _NOISE_SHARE times the buffer's own sampling noise, 0.4 sqrt(m / n), or at ``tol`` if
#: larger; _NEWTON_STEPS bounds the steps of one solve.
_GROWTH = 2.0
_NOISE_SHARE = 0.25
_NEWTON_STEPS = 100
#: Newton steps expected of a solve from an earlier solve's heights, before one was measured
#: (those of a buffer grown twofold take 2 to 4 at d = 2 to 32, m = 1,000).
_WARM_STEPS = 4


@dataclasses.dataclass
class _Buffer:
    """The rows of a stream kept for Newton steps, with their weights (a chunk's rows weigh
    their share of it times its number of rows), and the rows of the last solve."""

    X: Tensor
    w: Tensor
    n_solved: int = 0
    closed: bool = False
    #: Chunks added since ``X`` was last stacked (:meth:`stacked`): copying the whole buffer
    #: for every chunk would cost more than counting the chunk's cells, at d = 32.
    parts: list = dataclasses.field(default_factory=list)
    #: For budget planning (0: no solve yet): seconds per buffered row of the last solve;
    #: ``(rows, seconds of the first full pass, seconds per Newton step, rows of that pass)``
    #: of the last two solves (a step's time includes what follows the last one; the pass is
    #: over the rows the solve before had not held).
    solve_rate: float = 0.0
    timings: list = dataclasses.field(default_factory=list)
    #: Newton steps of the last solve that started from an earlier solve's heights, beyond
    #: those of its growth (:func:`_growth_steps`; 0: none yet), and the rows of the last
    #: solve.
    warm_steps: int = 0
    n_last: int = 0
    #: Rows whose candidate cells the last solve kept (the next first pass skips them).
    n_held: int = 0

    @property
    def n_rows(self) -> int:
        return self.X.shape[0] + sum(x.shape[0] for x, _ in self.parts)

    def add(self, X: Tensor, w: Tensor) -> None:
        self.parts.append((X, w))

    def stacked(self) -> _Buffer:
        """The buffer with its chunks stacked into ``X`` and ``w``."""
        if self.parts:
            self.X = torch.cat([self.X, *(x for x, _ in self.parts)])
            self.w = torch.cat([self.w, *(w for _, w in self.parts)])
            self.parts = []
        return self

    def seconds(self, n: int, which: int) -> float:
        """Seconds of a solve's first pass over ``n`` new rows (``which=1``: the rows of the
        last solve keep their candidates) or of a Newton step on ``n`` rows (``which=2``):
        the line through the last two solves' (a fixed cost, as the Newton system's over the
        targets, plus a cost per row), never under half the last solve's seconds per row;
        that rate alone after a single solve."""
        if not self.timings:
            return 0.0

        def rows(entry):  # a first pass's rows: the new ones (a timing's fourth entry)
            return entry[3] if which == 1 and len(entry) > 3 else entry[0]

        n2, t2 = rows(self.timings[-1]), self.timings[-1][which]
        rate = n * t2 / max(n2, 1)
        if len(self.timings) < 2 or rows(self.timings[-2]) == n2:
            return rate
        n1, t1 = rows(self.timings[-2]), self.timings[-2][which]
        slope = max((t2 - t1) / (n2 - n1), 0.0)
        line = max(t2 + slope * (n - n2), 0.0)
        return max(line, 0.5 * rate)

    def predict(self, n: int) -> float:
        """Seconds a solve of ``n`` rows from the last solve's heights should take: one full
        pass over the rows whose candidates it did not keep (:meth:`seconds`) and Newton
        steps. As many steps as the last solve from an earlier one's heights took beyond its
        growth's (:data:`_WARM_STEPS` before one), and one more for each doubling (rounded)
        beyond twice the last solve's rows (:func:`_growth_steps`: the new rows' noise moves
        the solution further). The first solve from scratch takes several times more steps
        than those that follow: its rate alone would overestimate them."""
        steps = (self.warm_steps or _WARM_STEPS) + _growth_steps(n, self.n_last)
        return self.seconds(n - self.n_held, 1) + steps * self.seconds(n, 2)


def _growth_steps(n: int, n_last: int) -> int:
    """Newton steps a solve of ``n`` rows takes beyond those of one on twice the last
    solve's ``n_last`` rows: one per doubling beyond it (rounded)."""
    growth = n / max(2 * n_last, 1)
    return max(round(math.log2(growth)), 0) if growth > 1 else 0


def buffer_snapshot(state: SolverState) -> dict | None:
    """The stream's buffer as a dict of CPU tensors and plain values (``None``: none), for
    :mod:`._snapshot`."""
    buffer = getattr(state, "stream_buffer", None)
    if buffer is None:
        return None
    buffer.stacked()
    return {
        "X": buffer.X.detach().cpu().clone(),
        "w": buffer.w.detach().cpu().clone(),
        "n_solved": buffer.n_solved,
        "closed": buffer.closed,
    }


def buffer_from_snapshot(state: SolverState, snapshot: dict | None, device) -> None:
    """Give ``state`` the buffer of :func:`buffer_snapshot` (on ``device``)."""
    if snapshot is None:
        state.stream_buffer = None
        return
    X, w = snapshot["X"].to(device), snapshot["w"].to(device)
    state.stream_buffer = _Buffer(X, w, snapshot["n_solved"], snapshot["closed"])


def _buffers(state: SolverState, problem: Problem, config: SolverConfig) -> bool:
    """Whether this stream keeps its rows for Newton steps (free heights, exact cells)."""
    free = hasattr(state.model, "residual")
    buffer = getattr(state, "stream_buffer", None)
    # A stream from scratch (a snapshot keeps no buffer: an unpickled stream goes on without).
    open_ = not buffer.closed if buffer is not None else state.n_seen == 0
    return open_ and not newton_obstacles(free, config.epsilon, problem.bandwidth)


def _buffer_stream(
    state: SolverState, problem: Problem, config: SolverConfig, callback
) -> SolverResult:
    """A chunk of a stream whose rows are kept: add them to the buffer; solve the buffer by
    Newton steps when it has grown enough (or is full, or ``state.stream_flush`` asks for it,
    as :func:`._sources.fit_stream` does for its last batch); else Adam steps on the chunk."""
    X, Y, nu = problem.source, problem.target, problem.target_weight
    n_chunk, m = X.shape[0], Y.shape[0]
    w = _source_weights(problem) * n_chunk
    buffer = getattr(state, "stream_buffer", None)
    if buffer is None or buffer.X.shape[1] != X.shape[1]:
        buffer = _Buffer(X[:0], w[:0])
    if buffer.n_rows < config.max_eval_samples:
        # (A full buffer whose last solve was cut short is solved again as it is.)
        buffer.add(X, w)
    state.stream_buffer = buffer
    n = buffer.n_rows
    full = n >= config.max_eval_samples
    flush = bool(getattr(state, "stream_flush", False)) and n > buffer.n_solved
    hold = bool(getattr(state, "stream_hold", False))
    state.stream_flush = state.stream_hold = False
    # ``stream_hold`` (fit_stream, near its budget) keeps the rows for a later, larger solve.
    grown = n >= _GROWTH * buffer.n_solved and not hold
    if n < FIRST_SOLVE_ROWS_PER_TARGET * m:
        # Too few rows for the stream's first solve yet: Adam steps on the chunk.
        steps = -(-n_chunk // min(config.batch_size, n_chunk))
        return _optimise_stream(state, problem, config, steps, callback, average=False)
    if buffer.n_solved and not (grown or full or flush):
        # The map is a solve on most of the rows seen: count the chunk in its cells.
        with torch.no_grad():
            h = state.model(Y)
        hard = _cells(problem, h, config).cell_sums(X, w / n_chunk, X)
        state.seen_masses += hard.masses.double() * n_chunk
        state.seen_sums += hard.sums.double() * n_chunk
        state.n_seen += n_chunk
        state.error = marginal_error(state.seen_masses / state.n_seen, nu)
        return stream_result(state, problem, config)
    buffer.stacked()
    whole = Problem(buffer.X, Y, nu, buffer.w / buffer.w.sum())
    tol = max(config.tol, _NOISE_SHARE * 0.4 * math.sqrt(m / n))
    # The candidates of the solve stay for the next one: the rows it held keep theirs, and
    # only the rows added since get a full pass (Candidates.extend).
    solve = dataclasses.replace(config, solver="newton", tol=tol, keep_candidates=True)
    first, warm = state.step, buffer.n_solved > 0
    began = time.perf_counter()
    restart_schedule(state, whole, solve)
    passed = time.perf_counter()
    result = run(state, whole, solve, _NEWTON_STEPS, callback)
    ended = time.perf_counter()
    # The first evaluation is the restart's pass; each later one follows a Newton step.
    steps = max(state.step - first - 1, 1)
    buffer.solve_rate = (ended - began) / n
    buffer.timings = [
        *buffer.timings[-1:],
        (n, passed - began, (ended - passed) / steps, n - min(buffer.n_held, n)),
    ]
    # The rows whose candidates this solve kept (none in a distributed fit).
    buffer.n_held = state.candidates.X.shape[0] if state.candidates is not None else 0
    if warm and not result.stopped:
        buffer.warm_steps = max(steps - _growth_steps(n, buffer.n_last), 1)
    buffer.n_last = n
    # A solve cut short (a callback, fit_stream's max_time) keeps the heights it reached,
    # better than those it started from (each Newton step lowers the buffer's error), and the
    # next chunk takes it up again.
    buffer.n_solved = 0 if result.stopped else n
    # The map is now that of a fit on every row seen: its counts and sums are theirs.
    state.seen_masses = result.masses.clone() * n
    state.seen_sums = result.sums.clone() * n
    state.n_seen = float(n)
    if full and not result.stopped:
        # Memory stays bounded: from here on, averaged steps from the buffer's solution.
        buffer.closed = True
        buffer.X, buffer.w, buffer.parts = X[:0], w[:0], []
        state.candidates = None
        state.average = {k: p.detach().clone() for k, p in state.model.named_parameters()}
    state.error = result.error
    return stream_result(state, problem, config, state.step - first, result.stopped)


def stream_result(
    state: SolverState, problem: Problem, config: SolverConfig, n_steps: int = 0, stopped=False
) -> SolverResult:
    """The :class:`SolverResult` of a stream: averaged heights, running counts and sums."""
    masses = state.seen_masses / max(state.n_seen, 1.0)
    state.converged = state.error <= config.tol
    return SolverResult(
        heights=_stream_heights(state, problem.target),
        masses=masses,
        sums=state.seen_sums / max(state.n_seen, 1.0),
        assignment=None,
        error=state.error,
        converged=state.converged,
        n_steps=n_steps,
        stopped=stopped,
    )
