"""Semi-discrete optimal transport (quadratic cost) by stochastic convex optimisation.

Pure torch, no scikit-learn. The pieces, each usable alone:

- :func:`power_assign`, :func:`top_scores`, :func:`cell_masses` (from :mod:`._kernels`): the
  argmax (or ``k`` best) of ``<x, y_j> + h_j`` and the cell masses, with targets processed in
  chunks, so memory is ``O(rows x chunk)`` whatever the number of targets; they return local
  sums, so a data-parallel version needs one all-reduce of their outputs.
- :class:`Problem`, :class:`SolverConfig`, :class:`SolverState`: the data (normalised), the
  hyperparameters and the resumable state (a plain object, so training can continue).
- :func:`init_state`, :func:`run`: Adam on the energy
  ``E(h) = E_x[max_j <x, y_j> + h_j] - sum_j nu_j h_j``, whose gradient with respect to the
  heights is ``w(h) - nu`` (cell masses minus target weights), on Monte Carlo batches that grow
  to the whole sample; there, free per-point heights take damped Newton steps on a smoothed
  energy instead (:mod:`._newton`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import _newton
from ._kernels import PowerCells, default_block_elements, marginal_error, noise_floor
from ._potentials import HeightModel

__all__ = [
    "Problem",
    "SolverConfig",
    "SolverState",
    "DivergenceError",
    "cell_masses",
    "init_state",
    "make_optimizer",
    "marginal_error",
    "noise_floor",
    "default_block_elements",
    "power_assign",
    "restart_schedule",
    "top_scores",
    "run",
    "state_from_dict",
    "state_to_dict",
]


class DivergenceError(ValueError):
    """Training produced a non-finite energy or non-finite heights."""


@dataclass
class Problem:
    """A semi-discrete problem in the solver's (normalised) coordinates.

    ``source_weight`` sums to one (``None``: uniform). With ``bandwidth > 0`` the source is the
    sample smoothed by a Gaussian kernel, a measure with a density.
    """

    source: Tensor
    target: Tensor
    target_weight: Tensor
    source_weight: Tensor | None = None
    bandwidth: float = 0.0
    _cdf: Tensor | None = field(default=None, init=False, repr=False)

    @property
    def n_samples(self) -> int:
        return self.source.shape[0]

    @property
    def is_empirical(self) -> bool:
        """The source is the (weighted) sample itself, so full-sample masses are exact."""
        return self.bandwidth == 0

    def draw(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Draw a Monte Carlo batch of source points (with replacement)."""
        dev = self.source.device
        if self.source_weight is None:
            idx = torch.randint(self.n_samples, (batch_size,), generator=generator, device=dev)
        else:
            if self._cdf is None:
                self._cdf = torch.cumsum(self.source_weight.double(), 0)
                self._cdf /= self._cdf[-1].clone()
            u = torch.rand(batch_size, generator=generator, device=dev, dtype=torch.float64)
            idx = torch.searchsorted(self._cdf, u).clamp_(max=self.n_samples - 1)
        x = self.source[idx]
        if self.bandwidth > 0:
            noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
            x = x + self.bandwidth * noise
        return x


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


@dataclass
class SolverState:
    """Everything needed to resume training: model, optimiser, schedule and history."""

    model: HeightModel
    optimizer: torch.optim.Optimizer
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
    schedule: list[tuple] = field(default_factory=list)
    temperature: float | None = None
    damping: float = 1e-2
    restarted: bool = False
    # Cell of every training sample at the final heights, when the last steps were Newton steps
    # (their pass has it): spares the caller a pass. Transient, not part of the snapshot.
    assignment: Tensor | None = None


def power_assign(X, Y, h, *, block_elements=None):  # temporary, replaced by the result refactor
    return PowerCells(Y, h, block_elements=block_elements).assign(X)


def top_scores(X, Y, h, k, *, block_elements=None):  # temporary
    return PowerCells(Y, h, block_elements=block_elements).top_k(X, k)


def cell_masses(X, Y, h, weights=None, *, epsilon=0.0, block_elements=None):  # temporary
    r = PowerCells(Y, h, block_elements=block_elements).cell_sums(X, weights, epsilon=epsilon)
    return r.masses, r.potential


def init_state(model: HeightModel, config: SolverConfig, generator: torch.Generator) -> SolverState:
    """Fresh optimiser state for ``model``."""
    return SolverState(
        model=model,
        optimizer=make_optimizer(model, config),
        generator=generator,
        batch_size=config.batch_size,
    )


def make_optimizer(model: HeightModel, config: SolverConfig) -> torch.optim.Adam:
    """Adam with two parameter groups: network weights and free per-point heights.

    The two live in different units (weights versus heights), so each has its own step size.
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
    groups = [g for g in groups if g["params"]]
    return torch.optim.Adam(groups, fused=True)


def restart_schedule(state: SolverState, config: SolverConfig, error: float) -> None:
    """Resume the schedule for a changed problem whose current marginal error is ``error``.

    The batch size, step sizes and Newton temperature are taken from the first evaluation of
    the previous run that had reached ``error``: a warm start close to the solution skips the
    coarse stage instead of repeating it, and one far from it starts over. Parameters and
    Adam's moments are kept.
    """
    point = next((entry for entry in state.schedule if entry[0] <= error), None)
    if point is None:
        batch, lrs = config.batch_size, [g["initial_lr"] for g in state.optimizer.param_groups]
        temperature = None
    else:
        batch, lrs = point[1], point[2]
        temperature = point[3] if len(point) > 3 else None
    for group, lr in zip(state.optimizer.param_groups, lrs, strict=False):
        group["lr"] = lr
    state.batch_size = batch
    state.best_error = math.inf
    state.n_stall = 0
    state.eval_source = None
    state.eval_weight = None
    state.temperature = temperature
    state.damping = 1e-2
    state.restarted = True


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
        state.eval_source = problem.draw(config.max_eval_samples, state.generator)
        state.eval_weight = None
    return state.eval_source, state.eval_weight


def _full_batch(state: SolverState, problem: Problem) -> bool:
    return problem.is_empirical and state.batch_size >= problem.n_samples


def _max_batch(problem: Problem, config: SolverConfig) -> int:
    cap = config.max_batch_size or config.max_eval_samples
    return problem.n_samples if problem.is_empirical else cap


def _has_network(model: HeightModel) -> bool:
    return any(name != "residual" for name, _ in model.named_parameters())


#: With ``solver="auto"``, Newton steps need this many samples per target point: with fewer,
#: the problem is close to a discrete assignment, where the smoothed Hessian says little about
#: which samples an empty cell would capture (n = m = 2,000: TV 0.40 after 200 Newton steps,
#: 0.049 after 300 Adam steps), and Adam's cheaper steps win.
NEWTON_MIN_SAMPLES_PER_TARGET = 10


def _uses_newton(model: HeightModel, problem: Problem, config: SolverConfig) -> bool:
    """Whether steps over the whole sample are Newton steps on the free heights."""
    if config.solver == "adam" or not hasattr(model, "residual"):
        return False
    if not problem.is_empirical or config.epsilon > 0:
        return False
    enough = problem.n_samples >= NEWTON_MIN_SAMPLES_PER_TARGET * problem.target.shape[0]
    return config.solver == "newton" or enough


def _starts_exact(state: SolverState, problem: Problem, config: SolverConfig) -> bool:
    """Whether to skip the Monte Carlo stage and take Newton steps from the start.

    Always with ``solver="newton"``. With ``"auto"``, when the whole sample is at most
    ``max_eval_samples`` (each evaluation is a pass over it anyway) and either there is no
    network for Monte Carlo steps to train, or the problem was just restarted (a warm start:
    the network is trained already).
    """
    if not _uses_newton(state.model, problem, config):
        return False
    if config.solver == "newton":
        return True
    small = problem.n_samples <= config.max_eval_samples
    return small and (state.restarted or not _has_network(state.model))


def _source_weights(problem: Problem) -> Tensor:
    X, w = problem.source, problem.source_weight
    if w is None:
        w = torch.full((X.shape[0],), 1.0 / X.shape[0], dtype=X.dtype, device=X.device)
    return w


@torch.no_grad()
def _newton_pass(
    state: SolverState, problem: Problem, current: _newton.Smoothed | None
) -> _newton.Smoothed:
    """The smoothed pass at the current heights (``current`` when already known)."""
    if current is not None:
        return current
    X, Y = problem.source, problem.target
    h = state.model(Y)
    current = _newton.smoothed(
        X, _source_weights(problem), Y, h, problem.target_weight, state.temperature
    )
    state.temperature = current.eps
    return current


@torch.no_grad()
def _newton_update(
    state: SolverState, problem: Problem, config: SolverConfig, current: _newton.Smoothed
) -> _newton.Smoothed:
    """One damped Newton step on the free heights; return the pass at the new heights.

    The temperature drops fourfold once the smoothed marginals are within half the tolerance
    while the hard ones are not, or when no damping gives a decrease (float resolution).
    """
    X, Y, nu = problem.source, problem.target, problem.target_weight
    w = _source_weights(problem)
    model = state.model
    h = model(Y)
    sharpen = marginal_error(current.soft, nu) <= 0.5 * config.tol
    if sharpen and state.temperature > _newton.MIN_TEMPERATURE:
        state.temperature = max(state.temperature / 4, _newton.MIN_TEMPERATURE)
        current = _newton.resmoothed(current, w, state.temperature)
    d, nxt, state.damping = _newton.newton_step(
        X, w, Y, nu, h, current, state.temperature, state.damping
    )
    if d is None:
        state.temperature = max(state.temperature / 4, _newton.MIN_TEMPERATURE)
        return _newton.resmoothed(current, w, state.temperature)
    model.residual += d.to(model.residual.dtype)
    _center_residual(model, nu)  # a constant shift: the pass stays valid
    return nxt


def _center_residual(model: HeightModel, nu: Tensor) -> None:
    # Heights are defined up to a constant; keep the free part from drifting.
    residual = getattr(model, "residual", None)
    if residual is not None:
        with torch.no_grad():
            residual -= (nu * residual).sum()


def _to_device(obj, device):
    if isinstance(obj, Tensor):
        # Always a copy: a snapshot must not share storage (e.g. Adam's step counters).
        return obj.detach().to(device, copy=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def state_to_dict(state: SolverState) -> dict:
    """A device-free snapshot of ``state`` (all tensors on the CPU), for pickling."""
    gen = state.generator
    return {
        "model": copy.deepcopy(state.model).cpu(),
        "optimizer": _to_device(state.optimizer.state_dict(), "cpu"),
        "generator": {
            "device": gen.device.type,
            "state": gen.get_state(),
            "seed": gen.initial_seed(),
        },
        "scalars": {
            k: getattr(state, k)
            for k in (
                "batch_size",
                "step",
                "best_error",
                "n_stall",
                "error",
                "converged",
                "temperature",
                "damping",
                "restarted",
            )
        },
        "energies": list(state.energies),
        "errors": list(state.errors),
        "schedule": list(state.schedule),
        "eval_source": _to_device(state.eval_source, "cpu"),
        "eval_weight": _to_device(state.eval_weight, "cpu"),
    }


def state_from_dict(snapshot: dict, device: torch.device) -> SolverState:
    """Rebuild a :class:`SolverState` from :func:`state_to_dict` on ``device``.

    The random generator's exact state is restored on the same kind of device; across kinds
    (a CUDA state loaded on a CPU) it is reseeded deterministically from its seed and step.
    """
    model = snapshot["model"].to(device)
    optimizer = make_optimizer(model, SolverConfig())
    optimizer.load_state_dict(snapshot["optimizer"])
    gen_info = snapshot["generator"]
    generator = torch.Generator(device=device)
    if gen_info["device"] == generator.device.type:
        generator.set_state(gen_info["state"])
    else:
        generator.manual_seed(gen_info["seed"] + snapshot["scalars"]["step"])
    state = SolverState(
        model=model,
        optimizer=optimizer,
        generator=generator,
        batch_size=snapshot["scalars"]["batch_size"],
    )
    for key, value in snapshot["scalars"].items():
        setattr(state, key, value)
    state.energies = list(snapshot["energies"])
    state.errors = list(snapshot["errors"])
    state.schedule = list(snapshot.get("schedule", []))
    state.eval_source = _to_device(snapshot["eval_source"], device)
    state.eval_weight = _to_device(snapshot["eval_weight"], device)
    return state


def _parameters_finite(model: HeightModel) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def run(
    state: SolverState,
    problem: Problem,
    config: SolverConfig,
    max_steps: int,
    callback: Callable[[SolverState, float], None] | None = None,
) -> SolverState:
    """Take up to ``max_steps`` optimisation steps, stopping early once converged.

    Each step draws a Monte Carlo batch, computes the cell masses under the current heights
    (no graph through the ``B x m`` scores) and back-propagates
    ``sum_j (w_j - nu_j) h_j(theta)``, whose gradient is exactly that of the energy. The
    marginal error is measured every ``eval_every`` steps on a fixed evaluation set (every
    step once the batch is the whole empirical sample: those steps are exact). The batch
    doubles as soon as the error is within twice the batch's Monte Carlo noise floor, or after
    ``n_iter_no_change`` evaluations without progress; at its cap, stalls halve the step sizes
    instead. Where Newton steps apply (free heights, empirical source, no smoothing, and with
    ``solver="auto"`` at least ``NEWTON_MIN_SAMPLES_PER_TARGET`` samples per target), steps
    over the whole sample are damped Newton steps on the free heights, each one evaluation
    (see :mod:`._newton`); ``solver="newton"``, vector heights and restarted (warm) problems
    of at most ``max_eval_samples`` samples start there. ``callback(state, seconds)`` is called
    after each evaluation.
    """
    Y, nu = problem.target, problem.target_weight
    eval_X, eval_w = _evaluation_set(state, problem, config)
    max_batch = _max_batch(problem, config)
    good = copy.deepcopy(state.model.state_dict())
    start = time.perf_counter()
    end_step = state.step + max_steps
    state.converged = False
    newton = _uses_newton(state.model, problem, config)
    if _starts_exact(state, problem, config):
        state.batch_size = max(state.batch_size, problem.n_samples)
    state.restarted = False
    state.assignment = None
    current = None  # the Newton pass at the current heights
    while state.step < end_step:
        full = _full_batch(state, problem)
        if full and newton:
            # Like a full-batch Adam step: evaluate the current heights (exactly), then update.
            current = _newton_pass(state, problem, current)
            state.step += 1
            state.energies.append(current.hard_energy)
            if not math.isfinite(current.hard_energy):
                _diverged(state, good, "energy")
            if _record(
                state, nu, marginal_error(current.hard, nu), config, max_batch, start, callback
            ):
                break
            current = _newton_update(state, problem, config, current)
            continue
        h = state.model(Y)
        with torch.no_grad():
            xb, wb = (
                (problem.source, problem.source_weight)
                if full
                else (problem.draw(state.batch_size, state.generator), None)
            )
            masses, mean_u = cell_masses(
                xb, Y, h.detach(), wb, epsilon=config.epsilon, block_elements=config.block_elements
            )
            energy = float(mean_u - (nu * h.detach()).sum())
        if not math.isfinite(energy):
            _diverged(state, good, "energy")
        state.step += 1
        state.energies.append(energy)
        if full:
            # Exact masses of the current heights: this step is also an evaluation.
            if _record(state, nu, marginal_error(masses, nu), config, max_batch, start, callback):
                break
        state.optimizer.zero_grad(set_to_none=True)
        ((masses.to(h.dtype) - nu) * h).sum().backward()
        state.optimizer.step()
        _center_residual(state.model, nu)
        if full:
            # Non-finite parameters show up as a non-finite energy at the next step.
            if state.step % 10 == 0:
                good = copy.deepcopy(state.model.state_dict())
            continue
        eval_every = config.eval_every or max(10, math.ceil(2 * eval_X.shape[0] / state.batch_size))
        if state.step % eval_every and state.step < end_step:
            continue
        _check_finite(state, good)
        with torch.no_grad():
            em, _ = cell_masses(
                eval_X,
                Y,
                state.model(Y),
                eval_w,
                epsilon=config.epsilon,
                block_elements=config.block_elements,
            )
        good = copy.deepcopy(state.model.state_dict())
        if _record(state, nu, marginal_error(em, nu), config, max_batch, start, callback):
            break
    _check_finite(state, good)
    if current is not None:
        state.assignment = current.index[:, 0]
    return state


def _check_finite(state: SolverState, good: dict) -> None:
    if not _parameters_finite(state.model):
        _diverged(state, good, "heights")


def _diverged(state: SolverState, good: dict, what: str) -> None:
    """Restore the last finite state and raise."""
    state.model.load_state_dict(good)
    raise DivergenceError(
        f"training diverged at iteration {state.step} (non-finite {what}); the last finite "
        "state was kept. Lower learning_rate / height_learning_rate or rescale the data."
    )


def _record(
    state: SolverState,
    nu: Tensor,
    error: float,
    config: SolverConfig,
    max_batch: int,
    start: float,
    callback: Callable[[SolverState, float], None] | None,
) -> bool:
    """Log an evaluation, adapt the schedule, and return whether training has converged."""
    state.error = error
    state.errors.append((state.step, error))
    state.schedule.append(
        (
            error,
            state.batch_size,
            [g["lr"] for g in state.optimizer.param_groups],
            state.temperature,
        )
    )
    if callback is not None:
        callback(state, time.perf_counter() - start)
    if error <= config.tol:
        state.converged = True
        return True
    # A batch of size B cannot resolve errors below its own noise floor: grow it at once.
    grown = False
    while state.batch_size < max_batch and error < 2 * noise_floor(nu, state.batch_size):
        state.batch_size = min(2 * state.batch_size, max_batch)
        grown = True
    if grown:
        state.n_stall = 0
        state.best_error = error
        return False
    if error < state.best_error * 0.99:
        state.best_error = error
        state.n_stall = 0
        return False
    state.n_stall += 1
    # Full-batch steps are evaluations too, and exact: give them a longer patience.
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
            _halve_step_sizes(state, config)
    return False


def _halve_step_sizes(state: SolverState, config: SolverConfig) -> None:
    for group in state.optimizer.param_groups:
        group["lr"] = max(0.5 * group["lr"], config.min_lr_factor * group["initial_lr"])
