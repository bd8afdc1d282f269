"""The ranks that share one fit, over ``torch.distributed`` (pure torch).

Two layouts. *Data parallel* (:class:`Group`):
each rank holds its own rows of the source; every pass over them is local (the kernels return
local sums) and a :class:`Group` sums what the solver needs across ranks: cell masses,
energies, barycentre sums and the Newton Hessian's products. Everything the solver decides
(a step accepted, a temperature lowered, convergence) then depends on summed values only,
which an all-reduce hands to every rank bit for bit, so every rank takes the same steps and
ends with the same heights. *Target sharded* (:class:`TargetShards`): every rank holds the
same rows and the same targets, and each scores only its slice of the target columns in the
full passes (:class:`~._kernels.ShardedCells`); the rows' best cells are all-gathered, and
all the rest is computed the same way on every rank. :data:`LOCAL` is the single-process
group: every sum is the identity.

A rank that fails before a collective would leave the others waiting: inputs are checked on
every rank and the outcome agreed on (:meth:`Group.agree`) before any solver step, and a
collective that fails or times out (the process group's ``timeout``) raises
:class:`DistributedError` naming the rank.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from ._kernels import CellSums, PowerCells, ShardedCells

__all__ = [
    "LOCAL",
    "DistributedError",
    "Group",
    "LocalGroup",
    "TargetShards",
    "process_group",
]


class DistributedError(RuntimeError):
    """A data-parallel fit failed on another rank, or a collective operation failed."""


class LocalGroup:
    """One process: every sum over ranks is the identity."""

    rank = 0
    size = 1
    distributed = False  # several ranks (inputs agreed on, seeds shared)
    splits_rows = False  # each rank holds its own rows, and sums over rows are summed here

    def cells(self, Y: Tensor, h: Tensor, block_elements: int | None = None) -> PowerCells:
        """The power diagram for the fit's passes (:class:`~._kernels.PowerCells`)."""
        return PowerCells(Y, h, block_elements=block_elements)

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the ranks, in place (returned)."""
        return tensor

    def sum_cells(self, local: CellSums) -> CellSums:
        """The masses, sums and potential of a pass summed over the ranks (the assignment
        stays the rank's own)."""
        return local

    def sum_array(self, array: np.ndarray) -> np.ndarray:
        """A float64 NumPy array summed over the ranks."""
        return np.asarray(array, dtype=np.float64)

    def sum_float(self, value: float) -> float:
        return float(value)

    def median(self, values: Tensor) -> float:
        """The median of ``values`` gathered over the ranks (here: of the local ones)."""
        return float(values.median()) if values.numel() else math.nan

    def gather(self, obj) -> list:
        """``obj`` of every rank (a picklable object), in rank order."""
        return [obj]

    def agree(self, error: BaseException | None) -> None:
        """Raise ``error`` if there is one (with several ranks: on every rank if any failed)."""
        if error is not None:
            raise error

    def seed(self, generator: torch.Generator) -> torch.Generator:
        """The generator of this rank's Monte Carlo draws (here: ``generator`` itself)."""
        return generator


LOCAL = LocalGroup()

#: Quantiles each rank contributes to :meth:`Group.median`.
_MEDIAN_SKETCH = 1025


class Group(LocalGroup):
    """The ranks of a ``torch.distributed`` process group sharing one fit.

    Parameters
    ----------
    process_group : ProcessGroup, optional
        The group (the default group when omitted); it must be initialised.
    """

    distributed = True
    splits_rows = True
    #: Collectives, tensor bytes sent and seconds spent in them, over every group of this
    #: process (the benchmarks' communication profile).
    stats = {"calls": 0, "bytes": 0, "seconds": 0.0}

    def __init__(self, process_group=None):
        import torch.distributed as dist

        self._dist = dist
        self.process_group = process_group
        self.rank = dist.get_rank(process_group)
        self.size = dist.get_world_size(process_group)
        self._device = torch.device("cpu")
        if dist.get_backend(process_group) == "nccl":
            self._device = torch.device("cuda", torch.cuda.current_device())

    def _collective(self, op, *args, **kwargs):
        start = time.perf_counter()
        stats = Group.stats
        stats["calls"] += 1
        stats["bytes"] += sum(a.numel() * a.element_size() for a in args if isinstance(a, Tensor))
        try:
            return op(*args, group=self.process_group, **kwargs)
        except (RuntimeError, ValueError) as exc:  # DistBackendError, timeouts, closed peers
            raise DistributedError(
                f"rank {self.rank} of {self.size}: a collective operation of the fit failed "
                f"({type(exc).__name__}: {exc}). Another rank probably stopped or raised an "
                "error (its own output says why), or did not call fit at the same time."
            ) from exc
        finally:
            stats["seconds"] += time.perf_counter() - start

    def sum(self, tensor: Tensor) -> Tensor:
        moved = tensor if tensor.device.type == self._device.type else tensor.to(self._device)
        self._collective(self._dist.all_reduce, moved)
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    def sum_array(self, array: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.array(array, dtype=np.float64))
        return self.sum(t).numpy()

    def sum_cells(self, local: CellSums) -> CellSums:
        parts = (local.masses, local.sums, local.potential)
        flat = self.sum(torch.cat([p.double().reshape(-1) for p in parts if p is not None]))
        out, at = [], 0
        for p in parts:  # one collective, unpacked in the parts' own shapes and dtypes
            if p is not None:
                p, at = flat[at : at + p.numel()].view(p.shape).to(p.dtype), at + p.numel()
            out.append(p)
        return CellSums(*out, local.index)

    def sum_float(self, value: float) -> float:
        return float(self.sum_array(np.array([value]))[0])

    def median(self, values: Tensor) -> float:
        """The median over the ranks, from ``1025`` quantiles of each rank's values weighted
        by their count (exact to the sketch's resolution)."""
        n = values.numel()
        sketch = torch.zeros(_MEDIAN_SKETCH + 1, dtype=torch.float64, device=self._device)
        if n:
            levels = torch.linspace(0, 1, _MEDIAN_SKETCH, dtype=torch.float64)
            # torch.quantile takes at most 2^24 values: an evenly strided subset beyond.
            sub = values.reshape(-1)[:: -(-n // 2**24)].double().cpu()
            sketch[:-1] = torch.quantile(sub, levels).to(self._device)
        sketch[-1] = n
        gathered = [torch.empty_like(sketch) for _ in range(self.size)]
        self._collective(self._dist.all_gather, gathered, sketch)
        held = [g.cpu() for g in gathered if g[-1] > 0]
        if not held:
            return math.nan
        points = torch.cat([g[:-1] for g in held])
        counts = torch.cat([g[-1].expand(_MEDIAN_SKETCH) for g in held])
        order = points.argsort()
        cumulative = counts[order].cumsum(0)
        at = int(torch.searchsorted(cumulative, cumulative[-1] / 2))
        return float(points[order][min(at, points.numel() - 1)])

    def gather(self, obj) -> list:
        out = [None] * self.size
        self._collective(self._dist.all_gather_object, out, obj)
        return out

    def gather_tensor(self, tensor: Tensor) -> list[Tensor]:
        """``tensor`` of every rank (same shape and dtype on all), in rank order."""
        moved = tensor if tensor.device.type == self._device.type else tensor.to(self._device)
        out = [torch.empty_like(moved) for _ in range(self.size)]
        self._collective(self._dist.all_gather, out, moved)
        return [t.to(tensor.device) for t in out]

    def agree(self, error: BaseException | None) -> None:
        """Every rank says whether it failed; if any did, every rank raises (the failing
        ranks their own error, the others a :class:`DistributedError` naming them)."""
        outcomes = self.gather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        failed = [(r, o) for r, o in enumerate(outcomes) if o is not None]
        if failed:
            names = "; ".join(f"rank {r}: {o}" for r, o in failed)
            raise DistributedError(f"the fit stopped before training on every rank: {names}")

    def seed(self, generator: torch.Generator) -> torch.Generator:
        """A generator for this rank's draws: seeded from ``generator`` (which advances the
        same way on every rank) and the rank, so that ranks draw different rows."""
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        own = torch.Generator(device=generator.device)
        return own.manual_seed((seed + 1_000_003 * self.rank) % 2**63)


class TargetShards(Group):
    """The ranks of a target-sharded fit: the same rows and targets on every rank, each rank
    scoring its slice of the targets in the full passes (sums over rows are local: every rank
    holds all of them)."""

    splits_rows = False
    # Sums over rows are local (every rank holds all of them) and every rank draws the same.
    sum = LocalGroup.sum
    sum_cells = LocalGroup.sum_cells
    sum_array = LocalGroup.sum_array
    sum_float = LocalGroup.sum_float
    median = LocalGroup.median
    seed = LocalGroup.seed

    def cells(self, Y: Tensor, h: Tensor, block_elements: int | None = None) -> PowerCells:
        return ShardedCells(Y, h, self, block_elements=block_elements)


def process_group(distributed) -> LocalGroup:
    """The group of a fit: :data:`LOCAL` (``False``), or over the default process group of
    ``torch.distributed`` (initialised by the user, e.g. under ``torchrun``): ``True`` or
    ``"data"`` a :class:`Group`, ``"targets"`` :class:`TargetShards`."""
    if distributed is False:
        return LOCAL
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group: launch "
            "the script with torchrun (e.g. `torchrun --nproc_per_node=2 fit.py`) and call "
            'torch.distributed.init_process_group("gloo") (CPU) or ("nccl") (GPUs) before fit.'
        )
    return TargetShards() if distributed == "targets" else Group()
