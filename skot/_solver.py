"""Semi-discrete optimal transport (quadratic cost) by stochastic convex optimisation.

Pure torch, no scikit-learn. The pieces, each usable alone:

- :class:`Problem`, :class:`SolverConfig`, :class:`SolverState`: the data (normalised), the
  hyperparameters and the resumable state (a plain object, so training can continue;
  :mod:`._snapshot` turns it into a device-free dict and back).
- :func:`init_state`, :func:`run`: Adam on the energy
  ``E(h) = E_x[max_j <x, y_j> + h_j] - sum_j nu_j h_j``, whose gradient with respect to the
  heights is ``w(h) - nu`` (cell masses minus target weights), on Monte Carlo batches that grow
  to the whole sample; there, free per-point heights take damped Newton steps on a smoothed
  energy instead (:mod:`._newton`). :func:`run` returns a frozen :class:`SolverResult`.
- Every pass over the scores goes through :class:`~._kernels.PowerCells`.
- Data-parallel fits: each rank's :class:`Problem` holds its own rows and a
  :class:`~._distributed.Group`; every pass is local and its sums go through the group, so
  every rank takes the same steps (:mod:`._distributed`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from . import _multiscale, _newton
from ._candidates import Candidates
from ._distributed import LOCAL, LocalGroup
from ._kernels import CellSums, PowerCells, marginal_error, noise_floor
from ._potentials import HeightModel, VectorHeights
from ._reuse import distill, residual_for, warm_start_heights

__all__ = [
    "DivergenceError",
    "LazyAdam",
    "Problem",
    "ScheduleEntry",
    "SolverConfig",
    "SolverResult",
    "SolverState",
    "StepRecord",
    "check_solver",
    "init_state",
    "make_optimizer",
    "newton_obstacles",
    "restart_schedule",
    "run",
    "summarize",
]


class DivergenceError(ValueError):
    """Training produced a non-finite energy or non-finite heights."""


@dataclass
class Problem:
    """A semi-discrete problem in the solver's (normalised) coordinates.

    ``source_weight`` sums to one (``None``: uniform). With ``bandwidth > 0`` the source is the
    sample smoothed by a Gaussian kernel, a measure with a density. With a distributed
    ``group``, ``source`` holds this rank's rows (possibly none) and ``source_weight`` their
    share of the union's weights, which sum to one over all ranks (``None``: uniform over the
    union); the target is the same on every rank.
    """

    source: Tensor
    target: Tensor
    target_weight: Tensor
    source_weight: Tensor | None = None
    bandwidth: float = 0.0
    group: LocalGroup = LOCAL
    _cdf: Tensor | None = field(default=None, init=False, repr=False)
    _n_total: int = field(default=0, init=False, repr=False)

    def __post_init__(self):
        n = self.source.shape[0]
        self._n_total = n
        if self.group.splits_rows:
            # A collective: every rank builds its problem at the same time.
            self._n_total = int(round(self.group.sum_float(n)))
            if self.source_weight is None:
                self.source_weight = self.source.new_full((n,), 1.0 / self._n_total)

    @property
    def n_samples(self) -> int:
        """Rows of the source (over all ranks)."""
        return self._n_total

    @property
    def is_empirical(self) -> bool:
        """The source is the (weighted) sample itself, so full-sample masses are exact."""
        return self.bandwidth == 0

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Draw a Monte Carlo batch of source points (with replacement) and their weights
        (``None``: uniform).

        With a distributed group each rank draws its share of ``batch_size`` from its own
        rows, with its own seed, weighted so that the union of the ranks' draws estimates the
        union's cell masses.
        """
        dev = self.source.device
        n_local = self.source.shape[0]
        weights = None
        if self.group.splits_rows:
            generator = self.group.seed(generator)
            share = float(self.source_weight.double().sum()) if n_local else 0.0
            batch_size = max(1, round(batch_size * share)) if share > 0 else 0
            weights = self.source.new_full((batch_size,), share / max(batch_size, 1))
        if self.source_weight is None:
            idx = torch.randint(n_local, (batch_size,), generator=generator, device=dev)
        elif batch_size == 0:
            idx = torch.zeros(0, dtype=torch.long, device=dev)
        else:
            if self._cdf is None:
                self._cdf = torch.cumsum(self.source_weight.double(), 0)
                self._cdf /= self._cdf[-1].clone()
            u = torch.rand(batch_size, generator=generator, device=dev, dtype=torch.float64)
            idx = torch.searchsorted(self._cdf, u).clamp_(max=n_local - 1)
        x = self.source[idx]
        if self.bandwidth > 0:
            noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
            x = x + self.bandwidth * noise
        return x, weights

    def sums(self, cells: PowerCells, X: Tensor, weights: Tensor | None, **kwargs) -> CellSums:
        """:meth:`~._kernels.PowerCells.cell_sums` of rows ``X``, summed over the ranks."""
        return self.group.sum_cells(cells.cell_sums(X, weights, **kwargs))


@dataclass(frozen=True)
class SolverConfig:
    """Hyperparameters of the optimisation (see :func:`run`)."""

    learning_rate: float = 1e-3
    height_learning_rate: float = 1e-2
    batch_size: int = 4096
    max_batch_size: int | None = None
    tol: float = 1e-2
    epsilon: float = 0.0
    eval_every: int | None = None
    n_iter_no_change: int = 3
    max_eval_samples: int = 1_000_000
    block_elements: int | None = None
    min_lr_factor: float = 2.0**-10
    full_batch_patience: int = 10
    solver: str = "auto"
    keep_candidates: bool = False  # keep the last Newton pass's candidates for a warm start


class ScheduleEntry(NamedTuple):
    """The schedule at one evaluation: where a restart whose error is ``error`` resumes."""

    error: float
    batch_size: int
    learning_rates: tuple[float, ...]
    temperature: float | None


class StepRecord(NamedTuple):
    """One evaluation, as a callback sees it."""

    step: int  # steps taken so far, over all runs
    error: float  # marginal error (total variation) of the current heights
    energy: float  # energy at this step (Monte Carlo estimate unless exact)
    batch_size: int
    learning_rate: float  # the largest of Adam's step sizes
    temperature: float | None  # Newton's smoothing temperature (None for Adam steps)
    exact: bool  # the error is over the whole training sample, not an estimate
    seconds: float  # since the start of this run


@dataclass
class SolverState:
    """Everything needed to resume training: model, optimiser, schedule and history."""

    model: HeightModel
    optimizer: LazyAdam
    generator: torch.Generator
    batch_size: int
    step: int = 0
    best_error: float = math.inf
    n_stall: int = 0
    error: float = math.inf
    converged: bool = False
    energies: list[float] = field(default_factory=list)
    errors: list[tuple[int, float]] = field(default_factory=list)
    eval_source: Tensor | None = None
    eval_weight: Tensor | None = None
    schedule: list[ScheduleEntry] = field(default_factory=list)
    temperature: float | None = None
    damping: float = _newton.INITIAL_DAMPING
    restarted: bool = False
    # The stream (partial_fit): samples seen, the running average of the parameters (what the
    # map uses), and the running cell counts and sums of every row seen.
    n_seen: float = 0.0
    average: dict[str, Tensor] | None = None
    seen_masses: Tensor | None = None
    seen_sums: Tensor | None = None
    # (heights, the Newton pass at them), left by restart_schedule for the first Newton step
    # (not part of a snapshot).
    first_pass: object | None = None
    # The last Newton pass's candidates (config.keep_candidates): a later fit on the same rows
    # starts from them instead of a full pass (not part of a snapshot).
    candidates: Candidates | None = None


@dataclass(frozen=True)
class SolverResult:
    """The outcome of :func:`run` (or :func:`._stream.stream_steps`), at the final heights.

    ``masses``, ``sums`` and ``assignment`` are those of the hard cells over the training
    sample (the source rows of the problem, weighted), whatever the smoothing: the estimator
    builds its attributes from them with no further pass. After
    :func:`._stream.stream_steps` they are the running counts and sums over every row seen
    (divided by their number), and ``error`` is the marginal error of those counts: an
    estimate.
    """

    heights: Tensor  # (m,) final heights
    masses: Tensor  # (m,) float64 weight of the training rows in each cell
    sums: Tensor  # (m, d) float64 weighted sums of the training rows in each cell
    assignment: Tensor | None  # (n,) cell of every training row (None for a stream)
    error: float  # exact on an empirical sample with hard cells, else the last estimate
    converged: bool  # error <= tol
    n_steps: int  # steps taken by this run
    stopped: bool  # a callback asked to stop


Callback = Callable[[StepRecord], "bool | None"]


def init_state(model: HeightModel, config: SolverConfig, generator: torch.Generator) -> SolverState:
    """Fresh optimiser state for ``model``."""
    return SolverState(
        model=model,
        optimizer=make_optimizer(model, config),
        generator=generator,
        batch_size=config.batch_size,
    )


class LazyAdam:
    """Adam over a model's parameter groups, built by torch at its first step.

    Constructing any torch optimiser imports ``torch._dynamo`` (about a second, once per
    process), which a fit by Newton steps alone never needs. Until the first step the groups
    are plain dicts holding the step sizes (``param_groups``, read and set by the schedule)
    and the moments are empty; :meth:`state_dict` and :meth:`load_state_dict` keep torch's
    format.
    """

    def __init__(self, groups: list[dict]):
        self._groups = groups
        self._adam: torch.optim.Adam | None = None
        self._pending: dict | None = None  # a state dict with moments, loaded once built

    @property
    def adam(self) -> torch.optim.Adam:
        if self._adam is None:
            rates = [(g["lr"], g["initial_lr"]) for g in self._groups]
            self._adam = torch.optim.Adam(self._groups, fused=True)
            if self._pending is not None:
                # The moments; the step sizes are those set since (torch's load replaces the
                # group dicts with the saved ones).
                self._adam.load_state_dict(self._pending)
                self._pending = None
                for group, (lr, initial) in zip(self._adam.param_groups, rates, strict=True):
                    group["lr"], group["initial_lr"] = lr, initial
        return self._adam

    @property
    def built(self) -> bool:
        return self._adam is not None

    @property
    def param_groups(self) -> list[dict]:
        return self._groups if self._adam is None else self._adam.param_groups

    @property
    def state(self) -> dict:
        """Adam's moments per parameter (empty before the first step)."""
        return {} if self._adam is None else self._adam.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adam.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.adam.step()
        # Fused Adam moves the parameters without bumping their version counters, which the
        # network's output cache (``_potentials._MLP``) reads: bump them (an in-place no-op).
        with torch.no_grad():
            for group in self.adam.param_groups:
                for param in group["params"]:
                    param.mul_(1)

    def state_dict(self) -> dict:
        if self._adam is not None or self._pending is not None:
            return self.adam.state_dict()
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self._groups]
        at = 0
        for group, own in zip(groups, self._groups, strict=True):
            group["params"] = list(range(at, at + len(own["params"])))
            at += len(own["params"])
        return {"state": {}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        for own, saved in zip(self.param_groups, state_dict["param_groups"], strict=True):
            own["lr"] = saved["lr"]
            own["initial_lr"] = saved.get("initial_lr", saved["lr"])
        if self._adam is not None:
            self._adam.load_state_dict(state_dict)
        elif state_dict["state"]:
            self._pending = state_dict


def make_optimizer(model: HeightModel, config: SolverConfig) -> LazyAdam:
    """Adam with two parameter groups: network weights and free per-point heights.

    The two live in different units (weights versus heights), so each has its own step size.
    Built by torch at the first step (:class:`LazyAdam`).
    """
    named = list(model.named_parameters())
    free = [p for name, p in named if name == "residual"]
    net = [p for name, p in named if name != "residual"]
    groups = [
        {"params": net, "lr": config.learning_rate, "initial_lr": config.learning_rate},
        {
            "params": free,
            "lr": config.height_learning_rate,
            "initial_lr": config.height_learning_rate,
        },
    ]
    return LazyAdam([g for g in groups if g["params"]])


@torch.no_grad()
def retarget_candidates(state: SolverState, Y_old: Tensor, Y: Tensor, previous: Tensor) -> None:
    """Carry the kept candidates over to a changed target ``Y`` (``previous``: for each point
    the index of the point of ``Y_old`` it continues, ``-1`` for a new one), at the heights
    the model gives it now (:meth:`~._candidates.Candidates.retarget`)."""
    kept = state.candidates
    if kept is None:
        return
    if kept.heights.shape[1] != Y_old.shape[0]:
        state.candidates = None
        return
    same = previous.shape[0] == Y_old.shape[0] and bool(
        torch.equal(previous, torch.arange(previous.shape[0], device=previous.device))
    )
    if same and torch.equal(Y, Y_old):
        return  # only the weights changed: the same cells
    kept.retarget(Y_old, PowerCells(Y, state.model(Y)), previous)


def _cells(problem: Problem, h: Tensor, config: SolverConfig) -> PowerCells:
    return problem.group.cells(problem.target, h, block_elements=config.block_elements)


def restart_schedule(
    state: SolverState,
    problem: Problem,
    config: SolverConfig,
    new_points: Tensor | None = None,
) -> float:
    """Resume the schedule for a changed problem; return its current marginal error.

    Where Newton steps start at once, the error is measured by the pass the first Newton step
    starts from, and with ``new_points`` (a boolean mask over the targets marking points
    without trained heights; all false when only points moved or weights changed) the heights
    are corrected from that pass's candidate cells (:func:`._reuse.warm_start_heights`), and
    the corrections kept if they lower the marginal error (none when the carried heights are
    already within ``tol`` by their candidates' best cells).
    The batch size, step sizes and Newton temperature are taken from the first evaluation of
    the previous run that had reached that error: a warm start close to the solution skips the
    coarse stage instead of repeating it, and one far from it starts over. Parameters and
    Adam's moments are kept.
    """
    model = state.model
    X, w, Y, nu = problem.source, _source_weights(problem), problem.target, problem.target_weight
    newton = _uses_newton(model, problem, config) and _starts_exact(state, problem, config)
    with torch.no_grad():
        h = model(Y)
        if newton:
            # Each row's best cells (kept from the last fit on these rows, else a full pass);
            # the warm-start corrections and the first Newton step read them.
            cells = problem.group.cells(Y, h)
            candidates = Candidates.kept_or_new(state.candidates, cells, X, _newton.CANDIDATES)
            first = None
            if new_points is not None and not problem.group.splits_rows:
                # The corrections read every row's candidates: all rows on this rank only (a
                # data-parallel warm start starts from the carried-over heights). A heuristic
                # start, kept where its (certified) pass has a lower error than the carried
                # heights have by their candidates' best cells (no pass); otherwise the
                # carried heights get their pass. They read each row's TOP_K best cells, as
                # a Newton pass does: more only cost sorts and merges.
                vals, idx = candidates.rescored(cells, _newton.TOP_K)
                masses = torch.bincount(idx[:, 0], weights=w.double(), minlength=Y.shape[0])
                carried = marginal_error(masses, nu)
                # Carried heights already within the tolerance by their candidates' best
                # cells (no pass) need only their certified pass.
                if carried > config.tol:
                    warm = warm_start_heights(X, Y, vals, idx, w, h, nu, new_points)
                    corrected = _newton.smoothed(
                        X, w, Y, warm, nu, None, _newton.TOP_K, candidates, group=problem.group
                    )
                    if marginal_error(corrected.hard, nu) < carried:
                        model.residual += (warm - h).to(model.residual.dtype)
                        h, first = model(Y), corrected
            if first is None:
                first = _newton.smoothed(
                    X, w, Y, h, nu, None, _newton.TOP_K, candidates, group=problem.group
                )
            error = marginal_error(first.hard, nu)
        else:
            masses = problem.sums(
                _cells(problem, h, config), X, problem.source_weight, epsilon=config.epsilon
            )
            error = marginal_error(masses.masses, nu)
    point = next((entry for entry in state.schedule if entry.error <= error), None)
    if point is None:
        batch = config.batch_size
        lrs = tuple(g["initial_lr"] for g in state.optimizer.param_groups)
        temperature = None
    else:
        batch, lrs, temperature = point.batch_size, point.learning_rates, point.temperature
    for group, lr in zip(state.optimizer.param_groups, lrs, strict=False):
        group["lr"] = lr
    state.batch_size = batch
    state.best_error = math.inf
    state.n_stall = 0
    state.eval_source = None
    state.eval_weight = None
    state.damping = _newton.INITIAL_DAMPING
    state.restarted = True
    state.temperature = temperature
    if newton:
        if temperature is None:
            state.temperature = first.eps
        state.first_pass = (
            h,
            _newton.resmoothed(first, w, state.temperature, group=problem.group),
        )
    return error


def newton_obstacles(free_heights: bool, epsilon: float, bandwidth: float) -> list[str]:
    """Why Newton steps cannot apply (empty when they can): the one rule for both the
    estimator's parameter check and the solver's choice."""
    reasons = []
    if not free_heights:
        reasons.append('height="network" has no free per-point heights')
    if epsilon > 0:
        reasons.append("epsilon > 0")
    if bandwidth > 0:
        reasons.append("bandwidth > 0")
    return reasons


def check_solver(free_heights: bool, config: SolverConfig, bandwidth: float) -> None:
    """Raise a clear error when ``solver="newton"`` is asked for where it cannot apply."""
    reasons = newton_obstacles(free_heights, config.epsilon, bandwidth)
    if config.solver == "newton" and reasons:
        raise ValueError(
            'solver="newton" needs free heights on the sample itself, but '
            + ", ".join(reasons)
            + '; use solver="auto" or "adam".'
        )


def _uses_newton(model: HeightModel, problem: Problem, config: SolverConfig) -> bool:
    """Whether steps over the whole sample are Newton steps on the free heights."""
    free = hasattr(model, "residual")
    return config.solver != "adam" and not newton_obstacles(free, config.epsilon, problem.bandwidth)


def _starts_exact(state: SolverState, problem: Problem, config: SolverConfig) -> bool:
    """Whether to skip the Monte Carlo stage and take Newton steps from the start.

    Always with ``solver="newton"``. With ``"auto"``, when the whole sample is at most
    ``max_eval_samples`` (each evaluation is a pass over it anyway): the free heights solve the
    problem and a network, if any, learns from them afterwards (:func:`._reuse.distill`),
    so there is nothing for Monte Carlo steps to train.
    """
    return config.solver == "newton" or problem.n_samples <= config.max_eval_samples


def _source_weights(problem: Problem) -> Tensor:
    X, w = problem.source, problem.source_weight
    return X.new_full((X.shape[0],), 1.0 / X.shape[0]) if w is None else w


def _center_residual(model: HeightModel, nu: Tensor) -> None:
    # Heights are defined up to a constant; keep the free part from drifting.
    residual = getattr(model, "residual", None)
    if residual is not None:
        with torch.no_grad():
            residual -= (nu * residual).sum()


def run(
    state: SolverState,
    problem: Problem,
    config: SolverConfig,
    max_steps: int,
    callback: Callback | None = None,
) -> SolverResult:
    """Take up to ``max_steps`` optimisation steps, stopping early once converged.

    Adam steps (:func:`_adam_steps`) draw Monte Carlo batches that grow to the whole sample.
    Where Newton steps apply (free heights, empirical source, no smoothing, and ``solver``
    not ``"adam"``), steps over the whole sample are damped Newton steps instead
    (:func:`_newton_steps`);
    ``solver="newton"``, vector heights and restarted (warm) problems of at most
    ``max_eval_samples`` samples start there. After each evaluation ``callback(record)`` is
    called with a :class:`StepRecord`; a true return value stops the run.
    """
    loop = _Loop(state, problem, config, max_steps, callback)
    newton = _uses_newton(state.model, problem, config)
    if newton and _starts_exact(state, problem, config):
        state.batch_size = max(state.batch_size, problem.n_samples)
    warm = state.restarted
    state.restarted = False
    state.converged = False
    if not (newton and loop.full_batch):
        _adam_steps(loop, hand_over=newton)
    if newton and loop.full_batch:
        _newton_steps(loop)
    loop.check_finite()
    result = loop.result()
    # A warm start keeps the frequencies chosen on the previous target.
    if distill(state.model, problem.target, state.generator, select=not warm):
        for param in state.model.net.parameters():  # its Adam moments are stale now
            state.optimizer.state.pop(param, None)
    return result


class _Loop:
    """What the Adam and Newton loops share: the evaluation set, the step budget, the record
    of each evaluation with its schedule update, the last finite parameters, and the last
    exact pass at the current heights (which :meth:`result` reuses)."""

    def __init__(self, state, problem, config, max_steps, callback):
        self.state, self.problem, self.config, self.callback = state, problem, config, callback
        self.eval_X, self.eval_w = _evaluation_set(state, problem, config)
        self.eval_is_sample = self.eval_X is problem.source
        # Rows of the evaluation set over all ranks (each rank holds its share).
        self.n_eval = problem.n_samples if self.eval_is_sample else config.max_eval_samples
        cap = config.max_batch_size or config.max_eval_samples
        self.max_batch = problem.n_samples if problem.is_empirical else cap
        self.first_step = state.step
        self.end_step = state.step + max_steps
        self.start = time.perf_counter()
        self.good = copy.deepcopy(state.model.state_dict())
        self.finished = self.stopped = False
        # A hard pass over the training sample at the current heights (None once they move),
        # and the same from a Newton pass (its top candidates).
        self.last: CellSums | None = None

    @property
    def running(self) -> bool:
        return self.state.step < self.end_step and not self.finished

    @property
    def full_batch(self) -> bool:
        return self.problem.is_empirical and self.state.batch_size >= self.problem.n_samples

    def evaluate(
        self, error: float, exact: bool, final: bool = True, temperature: float | None = None
    ) -> bool:
        """Log an evaluation, tell the callback, adapt the schedule; return whether to stop.

        Only a ``final`` evaluation (of the problem itself, not of a coarse subsample) can
        converge. ``temperature``: that of a coarse target level, whose evaluations are not
        schedule points (a restart on the problem itself cannot resume at it).
        """
        state = self.state
        lrs = tuple(g["lr"] for g in state.optimizer.param_groups)
        state.error = error
        state.errors.append((state.step, error))
        if temperature is None:
            temperature = state.temperature
            state.schedule.append(ScheduleEntry(error, state.batch_size, lrs, temperature))
        stop = False
        if self.callback is not None:
            record = StepRecord(
                state.step,
                error,
                state.energies[-1],
                state.batch_size,
                max(lrs),
                temperature,
                exact,
                time.perf_counter() - self.start,
            )
            stop = bool(self.callback(record))
        if final and error <= self.config.tol:
            state.converged = self.finished = True
        elif stop:
            self.stopped = self.finished = True
        else:
            _adapt_schedule(state, self.config, error, self.max_batch, self.problem.target_weight)
        return self.finished

    def keep_good(self) -> None:
        self.good = copy.deepcopy(self.state.model.state_dict())

    def check_finite(self) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in self.state.model.parameters()):
            self.diverged("heights")

    def diverged(self, what: str) -> None:
        """Restore the last finite state and raise."""
        self.state.model.load_state_dict(self.good)
        raise DivergenceError(
            f"training diverged at iteration {self.state.step} (non-finite {what}); the last "
            "finite state was kept. Lower learning_rate / height_learning_rate or rescale the "
            "data."
        )

    def result(self) -> SolverResult:
        index = None if self.last is None else self.last.index
        steps = self.state.step - self.first_step
        return summarize(
            self.state, self.problem, self.config, index=index, n_steps=steps, stopped=self.stopped
        )


def summarize(
    state: SolverState,
    problem: Problem,
    config: SolverConfig,
    *,
    index: Tensor | None = None,
    n_steps: int = 0,
    stopped: bool = False,
) -> SolverResult:
    """The :class:`SolverResult` of the current heights: a pass over the sample only when
    ``index`` (the training rows' cells at these heights) is not given. Also what is left
    after an error or an interruption (the state holds the last finite parameters)."""
    with torch.no_grad():
        h = state.model(problem.target)
    w = _source_weights(problem)
    sums = problem.sums(
        _cells(problem, h, config), problem.source, w, values=problem.source, index=index
    )
    error = state.error
    if problem.is_empirical and config.epsilon == 0:
        error = marginal_error(sums.masses, problem.target_weight)
    state.error = error
    state.converged = error <= config.tol
    return SolverResult(
        heights=h,
        masses=sums.masses,
        sums=sums.sums,
        assignment=sums.index,
        error=error,
        converged=state.converged,
        n_steps=n_steps,
        stopped=stopped,
    )


def _evaluation_set(
    state: SolverState, problem: Problem, config: SolverConfig
) -> tuple[Tensor, Tensor | None]:
    """The fixed sample over which the marginal error is measured.

    The whole training sample when the source is empirical and not too large (exact, no
    Monte Carlo noise); otherwise a fixed draw of ``max_eval_samples`` points.
    """
    if problem.is_empirical and problem.n_samples <= config.max_eval_samples:
        return problem.source, problem.source_weight
    if state.eval_source is None or state.eval_source.shape[1] != problem.source.shape[1]:
        state.eval_source, state.eval_weight = problem.draw(
            config.max_eval_samples, state.generator
        )
    return state.eval_source, state.eval_weight


def _adam_steps(loop: _Loop, hand_over: bool) -> None:
    """Adam steps until converged, out of steps, stopped, or (``hand_over``) the batch is the
    whole sample, where Newton steps take over.

    Each step draws a Monte Carlo batch, computes the cell masses under the current heights
    (no graph through the ``B x m`` scores) and back-propagates
    ``sum_j (w_j - nu_j) h_j(theta)``, whose gradient is exactly that of the energy. The
    marginal error is measured every ``eval_every`` steps on the fixed evaluation set (every
    step once the batch is the whole empirical sample: those steps are exact).
    """
    state, problem, config = loop.state, loop.problem, loop.config
    Y, nu = problem.target, problem.target_weight
    hard = config.epsilon == 0
    while loop.running and not (hand_over and loop.full_batch):
        full = loop.full_batch
        h = state.model(Y)
        if full:
            xb, wb = problem.source, problem.source_weight
        else:
            xb, wb = problem.draw(state.batch_size, state.generator)
        batch = problem.sums(_cells(problem, h, config), xb, wb, epsilon=config.epsilon)
        energy = float(batch.potential - (nu * h.detach()).sum())
        if not math.isfinite(energy):
            loop.diverged("energy")
        state.step += 1
        state.energies.append(energy)
        if full:
            # Exact masses of the current heights: this step is also an evaluation.
            loop.last = batch if hard else None
            if loop.evaluate(marginal_error(batch.masses, nu), exact=True):
                return
        state.optimizer.zero_grad(set_to_none=True)
        ((batch.masses.to(h.dtype) - nu) * h).sum().backward()
        state.optimizer.step()
        _center_residual(state.model, nu)
        loop.last = None
        if full:
            # Non-finite parameters show up as a non-finite energy at the next step.
            if state.step % 10 == 0:
                loop.keep_good()
            continue
        eval_every = config.eval_every or max(10, math.ceil(2 * loop.n_eval / state.batch_size))
        if state.step % eval_every and state.step < loop.end_step:
            continue
        loop.check_finite()
        with torch.no_grad():
            h = state.model(Y)
        cells = _cells(problem, h, config)
        ev = problem.sums(cells, loop.eval_X, loop.eval_w, epsilon=config.epsilon)
        loop.keep_good()
        exact = loop.eval_is_sample and hard
        loop.last = ev if exact else None
        if loop.evaluate(marginal_error(ev.masses, nu), exact=exact):
            return


def _newton_steps(loop: _Loop) -> None:
    """Damped Newton steps on the free heights over the whole sample, each one evaluation
    (see :mod:`._newton`), until converged, out of steps or stopped.

    A cold fit (no earlier steps, no warm start) first takes them on nested random subsamples
    (:func:`._newton.coarse_levels`), each to its own tolerance, their evaluations marked not
    exact; each level starts at its initial temperature.
    """
    state, problem = loop.state, loop.problem
    X, w, Y = problem.source, _source_weights(problem), problem.target
    current = None  # the pass at the current heights
    if state.first_pass is not None:
        heights, first = state.first_pass
        state.first_pass = None
        with torch.no_grad():
            if torch.equal(heights, state.model(Y)):
                current = first
    elif state.step == 0 and state.candidates is None:
        if _newton.coarse_levels(problem.n_samples, Y.shape[0], loop.config.tol):
            if not _subsample_steps(loop, X, w):
                return
        elif not _coarse_target_steps(loop, X, w):
            return
    current = _level_steps(loop, X, w, loop.config.tol, current, final=True)
    if current is not None:
        loop.last = CellSums(current.hard, None, None, current.index[:, 0])
        keep = loop.config.keep_candidates and not problem.group.distributed
        state.candidates = current.candidates if keep else None


def _subsample_steps(loop: _Loop, X: Tensor, w: Tensor) -> bool:
    """The coarse row levels of a cold fit (:func:`_subsamples`), smallest first, each solved
    to its tolerance from the last one's heights, its rows' candidates handed on to the next
    level and finally to the whole sample ``X``. Returns whether to go on (not out of steps
    or stopped)."""
    state, problem = loop.state, loop.problem
    last = held = None
    for X_level, w_level, level_tol, rows in _subsamples(
        problem, w, state.generator, loop.config.tol
    ):
        if last is not None:  # the levels are nested: the last one's rows are here
            _carry_candidates(state, problem, last, X_level, torch.searchsorted(rows, held))
        last = _level_steps(loop, X_level, w_level, level_tol, None, final=False)
        held = rows
        if not loop.running:
            state.candidates = None  # a subsample's: no later fit is on those rows
            return False
        # The next level starts afresh: the initial temperature of its heights (the median
        # gap between each row's best and second-best score), the first damping.
        state.temperature, state.damping = None, _newton.INITIAL_DAMPING
    _carry_candidates(state, problem, last, X, held)
    return True


def _carry_candidates(state, problem: Problem, last, X: Tensor, held: Tensor) -> None:
    """Hand the candidates of a coarse level's last pass ``last`` on to the next level's rows
    ``X``, whose rows ``held`` are that level's (:meth:`Candidates.extend`): the next level's
    first pass scores every target only for its other rows."""
    state.candidates = None
    if last is None or last.candidates is None:
        return
    Y = problem.target
    with torch.no_grad():
        cells = problem.group.cells(Y, state.model(Y))
    if last.candidates.extend(cells, X, held):
        state.candidates = last.candidates


def _level_steps(
    loop: _Loop,
    X: Tensor,
    w: Tensor,
    tol: float,
    current,
    final: bool,
    target: _CoarseTarget | None = None,
):
    """Newton steps on rows ``X`` (weights ``w``) from the pass ``current`` (``None``: a new
    one) until their marginal error is within ``tol``, out of steps or stopped; return the
    pass at the last heights. A coarse level (not ``final``) also ends at its first step that
    does not lower its error (a coarse target level: after ``COARSE_TARGET_PATIENCE`` steps
    without a new lowest error): it is only a start (an atomic source, say, has a floor
    there). With ``target`` (a coarse target level) the steps move its heights instead of the
    model's."""
    state, problem = loop.state, loop.problem
    on = state if target is None else target
    Y, nu = (problem.target, problem.target_weight) if target is None else (target.Y, target.nu)
    patience = 1 if target is None else _multiscale.COARSE_TARGET_PATIENCE
    best, since_best = math.inf, 0
    while loop.running:
        if current is None:
            current = _newton.pass_at(on, X, w, Y, nu, group=problem.group)
        state.step += 1
        state.energies.append(current.hard_energy)
        if not math.isfinite(current.hard_energy):
            loop.diverged("energy")
        error = marginal_error(current.hard, nu)
        level_temperature = None if target is None else target.temperature
        if loop.evaluate(error, exact=final, final=final, temperature=level_temperature):
            break
        if error <= tol:
            break
        best, since_best = (error, 0) if error < best else (best, since_best + 1)
        if not final and since_best >= patience:
            break
        current = _newton.update(on, X, w, Y, nu, tol, current, group=problem.group)
    return current


@dataclass
class _CoarseTarget:
    """What the Newton steps of a coarse target level read and move: its points ``Y`` and
    weights ``nu``, its free heights (a vector model with the fit's offset) and their
    temperature and damping."""

    Y: Tensor
    nu: Tensor
    model: HeightModel
    temperature: float | None = None
    damping: float = _newton.INITIAL_DAMPING
    candidates: Candidates | None = None


def _coarse_target_steps(loop: _Loop, X: Tensor, w: Tensor) -> bool:
    """The coarse target levels of a cold fit with few rows per target
    (:mod:`._multiscale`), coarsest first, each solved to its tolerance and refined into the
    next; the model's heights are set from the finest one. Returns whether to go on (not out
    of steps or stopped)."""
    state, problem = loop.state, loop.problem
    Y, nu = problem.target, problem.target_weight
    levels = _multiscale.target_levels(Y, nu, problem.n_samples, state.generator)
    if not levels:
        return True
    tol = max(loop.config.tol, _multiscale.COARSE_TARGET_TOL)
    model = state.model
    finer = [(Y, nu)] + [(level.points, level.weights) for level in levels[:-1]]
    h = None
    for level, (Y_fine, nu_fine) in zip(levels[::-1], finer[::-1], strict=True):
        coarse = VectorHeights(Y.shape[1], level.points.shape[0]).to(Y.device)
        with torch.no_grad():
            coarse.offset_center.copy_(model.offset_center)
            coarse.offset_precision.copy_(model.offset_precision)
            if h is not None:
                coarse.residual.copy_(residual_for(coarse, level.points, h))
        target = _CoarseTarget(level.points, level.weights, coarse)
        current = _level_steps(loop, X, w, tol, None, final=False, target=target)
        if not loop.running:
            return False
        with torch.no_grad():
            h = _multiscale.refine_heights(
                X,
                w,
                level,
                coarse(level.points),
                current.index[:, 0],
                Y_fine,
                nu_fine,
                group=problem.group,
            )
    with torch.no_grad():
        model.residual.copy_(residual_for(model, Y, h).to(model.residual.dtype))
    _center_residual(model, nu)
    state.temperature, state.damping = None, _newton.INITIAL_DAMPING
    return True


def _subsamples(problem: Problem, w: Tensor, generator: torch.Generator, tol: float):
    """The coarse levels of a cold fit: nested random subsets of the rows, their weights
    scaled to sum to one, with each level's tolerance and its rows' positions in the sample.

    The subsets are drawn over the union's rows in rank order (the generator advances alike on
    every rank), each rank keeping its own: a data-parallel fit takes the same levels, and so
    the same steps, as one process on the concatenated rows.
    """
    levels = _newton.coarse_levels(problem.n_samples, problem.target.shape[0], tol)
    if not levels:
        return
    X, group = problem.source, problem.group
    n_local = X.shape[0]
    offset = 0
    if group.splits_rows:
        counts = group.gather(n_local)
        offset = sum(counts[: group.rank])
    order = torch.randperm(problem.n_samples, generator=generator, device=generator.device)
    rank_of = order.to(X.device) - offset  # this rank's row, or out of range
    for rows, level_tol in levels:
        chosen = rank_of[:rows]
        idx = chosen[(chosen >= 0) & (chosen < n_local)].sort().values
        w_level = w[idx]
        total = group.sum_float(float(w_level.double().sum()))
        yield X[idx], w_level / total, level_tol, idx


def _adapt_schedule(
    state: SolverState, config: SolverConfig, error: float, max_batch: int, nu: Tensor
) -> None:
    """Grow the batch or halve the step sizes after an evaluation that did not converge.

    The batch doubles as soon as the error is within twice the batch's Monte Carlo noise
    floor, or after ``n_iter_no_change`` evaluations without a 1% improvement; at its cap,
    stalls (with a ``full_batch_patience`` times longer patience: those evaluations are exact)
    halve the step sizes instead.
    """
    grown = False
    while state.batch_size < max_batch and error < 2 * noise_floor(nu, state.batch_size):
        state.batch_size = min(2 * state.batch_size, max_batch)
        grown = True
    if grown or error < state.best_error * 0.99:
        state.best_error = error
        state.n_stall = 0
        return
    state.n_stall += 1
    patience = config.n_iter_no_change
    if state.batch_size >= max_batch:
        patience *= config.full_batch_patience
    if state.n_stall >= patience:
        # best_error is kept: oscillating below a reset best would otherwise look like progress
        # and the step size would never shrink.
        state.n_stall = 0
        if state.batch_size < max_batch:
            state.batch_size = min(2 * state.batch_size, max_batch)
        else:
            for group in state.optimizer.param_groups:
                group["lr"] = max(0.5 * group["lr"], config.min_lr_factor * group["initial_lr"])
