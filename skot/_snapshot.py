"""Device-free snapshots of the solver state, for pickling (pure torch)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from ._solver import ScheduleEntry, SolverConfig, SolverState, make_optimizer
from ._stream import buffer_from_snapshot, buffer_snapshot

__all__ = ["state_from_dict", "state_to_dict"]


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
                "n_seen",
            )
        },
        "energies": list(state.energies),
        "errors": list(state.errors),
        "schedule": list(state.schedule),
        "eval_source": _to_device(state.eval_source, "cpu"),
        "eval_weight": _to_device(state.eval_weight, "cpu"),
        "average": _to_device(state.average, "cpu"),
        "seen_masses": _to_device(state.seen_masses, "cpu"),
        "seen_sums": _to_device(state.seen_sums, "cpu"),
        "stream_buffer": buffer_snapshot(state),
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
    state.schedule = [_schedule_entry(entry) for entry in snapshot.get("schedule", [])]
    state.eval_source = _to_device(snapshot["eval_source"], device)
    state.eval_weight = _to_device(snapshot["eval_weight"], device)
    for key in ("average", "seen_masses", "seen_sums"):
        setattr(state, key, _to_device(snapshot.get(key), device))
    buffer_from_snapshot(state, snapshot.get("stream_buffer"), device)
    return state


def _schedule_entry(entry) -> ScheduleEntry:
    """An entry of a snapshot's schedule (older snapshots stored plain 3- or 4-tuples)."""
    error, batch, lrs, *rest = entry
    return ScheduleEntry(error, batch, tuple(lrs), rest[0] if rest else None)
