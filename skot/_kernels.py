"""Score kernels: every computation of power scores ``<x, y_j> + h_j`` lives here.

Pure torch. :class:`PowerCells` holds one power diagram (target points and their heights) and
offers every pass over source rows that the library needs: the cell of each row
(:meth:`~PowerCells.assign`), its ``k`` best cells (:meth:`~PowerCells.top_k`), scores of
given cells (:meth:`~PowerCells.scores_at`), cell masses and sums, hard or entropic
(:meth:`~PowerCells.cell_sums`), the entropic map (:meth:`~PowerCells.soft_mean`) and the row
closest to entering a cell (:meth:`~PowerCells.closest_to_enter`); :mod:`._candidates` keeps
each row's best cells between passes on top of these passes. :class:`ShardedCells`
splits the full passes' target columns between the ranks of a target-sharded fit and merges
their row results (:func:`merge_top_k`). Targets are processed in
column blocks with a running reduction, so memory is ``O(block_elements)`` whatever the number
of targets, and sums are local (a data-parallel fit needs one all-reduce of them). Device and
dtype follow the inputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "BLOCK_ELEMENTS",
    "CellSums",
    "PowerCells",
    "ShardedCells",
    "default_block_elements",
    "marginal_error",
    "noise_floor",
]

#: Scores computed per block, by device type: the one block-size setting of the library. On a
#: CPU small enough to stay in the L2 cache between the product and the row reduction
#: (several times faster than large blocks at small d); on a GPU large enough to fill it.
BLOCK_ELEMENTS = {"cpu": 2**18, "cuda": 2**24}


def default_block_elements(device: torch.device | str) -> int:
    """Scores per block on ``device`` (:data:`BLOCK_ELEMENTS`)."""
    return BLOCK_ELEMENTS.get(torch.device(device).type, BLOCK_ELEMENTS["cpu"])


def _block_shape(n_rows: int, n_cols: int, block_elements: int) -> tuple[int, int]:
    """Rows and target columns per block: up to 4096 columns, then as many rows as fit."""
    cols = max(1, min(n_cols, 4096, block_elements))
    rows = max(1, min(n_rows, block_elements // cols))
    return rows, cols


#: Columns per group of the two-level row reductions on a CPU (fastest of 16-256 on 64 x 4096
#: blocks of scores): a plain ``amax`` is vectorised there and about 15x faster than a max that
#: also returns indices, so the group maxima come first and only the best groups are searched.
_GROUP = 64
#: Device types whose row reductions go group-wise (faster there; the GPU benchmark measures both).
GROUPED_REDUCTIONS = {"cpu"}


def _row_max(s: Tensor) -> tuple[Tensor, Tensor]:
    """``s.max(dim=1)`` (values and first index of the max), group-wise on a CPU."""
    r, c = s.shape
    g = _GROUP
    main = c - c % g
    if s.device.type not in GROUPED_REDUCTIONS or main < 4 * g:
        return s.max(dim=1)
    groups = s[:, :main].view(r, main // g, g)
    best = groups.amax(dim=2).argmax(dim=1)  # first group holding the max
    inside = groups.gather(1, best[:, None, None].expand(r, 1, g)).squeeze(1)
    val, col = inside.max(dim=1)
    col += best * g
    if main < c:
        rv, rc = s[:, main:].max(dim=1)
        later = rv > val  # ties keep the lower index
        val = torch.where(later, rv, val)
        col = torch.where(later, rc + main, col)
    return val, col


def _row_topk(s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``s.topk(k, dim=1)``, group-wise on a CPU: the ``k`` groups with the largest maxima hold
    the ``k`` largest scores."""
    r, c = s.shape
    g = _GROUP
    main = c - c % g
    if s.device.type not in GROUPED_REDUCTIONS or main < 4 * k * g:
        return s.topk(k, dim=1)
    groups = s[:, :main].view(r, main // g, g)
    best = groups.amax(dim=2).topk(k, dim=1).indices
    inside = groups.gather(1, best[:, :, None].expand(r, k, g)).reshape(r, k * g)
    val, pos = inside.topk(k, dim=1)
    col = best.gather(1, pos // g) * g + pos % g
    if main < c:
        rv, rc = s[:, main:].topk(min(k, c - main), dim=1)
        val, j = torch.cat([val, rv], 1).topk(k, dim=1)
        col = torch.cat([col, rc + main], 1).gather(1, j)
    return val, col


class CellSums(NamedTuple):
    """What one pass of :meth:`PowerCells.cell_sums` returns."""

    masses: Tensor  # (m,) weight of the rows in each cell (float64 for hard cells)
    sums: Tensor | None  # (m, p) weighted sums of the rows' values per cell, or None
    potential: Tensor | None  # () sum_i w_i u(x_i) (None when the assignment was given)
    index: Tensor | None  # (n,) cell of every row (hard cells only)


class PowerCells:
    """The power diagram of target points ``Y`` with heights ``h``.

    Row ``x`` lies in cell ``argmax_j <x, y_j> + h_j`` (ties go to the lowest index). Every
    method takes source rows ``X`` of shape ``(n, d)`` on the device and in the dtype of ``Y``,
    works block by block (at most ``block_elements`` scores at a time) and needs no gradient.

    Parameters
    ----------
    Y : Tensor of shape (m, d)
        Target points.
    h : Tensor of shape (m,)
        Their heights.
    block_elements : int, optional
        Scores per block; :func:`default_block_elements` of the device when omitted.
    """

    def __init__(self, Y: Tensor, h: Tensor, *, block_elements: int | None = None):
        if h.shape != (Y.shape[0],):
            raise ValueError(f"h must have shape ({Y.shape[0]},), got {tuple(h.shape)}")
        self.Y = Y
        self.h = h.detach()
        self.block_elements = block_elements or default_block_elements(Y.device)

    @property
    def n_cells(self) -> int:
        return self.Y.shape[0]

    def _buffer(self, n_rows: int, n_cols: int | None = None) -> tuple[int, int, Tensor]:
        rows, cols = _block_shape(n_rows, n_cols or self.n_cells, self.block_elements)
        return rows, cols, self.Y.new_empty(rows * cols)

    def _scores(self, buf: Tensor, xb: Tensor, c0: int, cols: int) -> Tensor:
        """Scores of rows ``xb`` against targets ``c0 : c0 + cols``, written into ``buf``, one
        buffer reused by every block of a pass: on a CPU a fresh output per block costs a page
        fault per 4 KB, more than the product itself at small d."""
        Yb = self.Y[c0 : c0 + cols]
        out = buf[: xb.shape[0] * Yb.shape[0]].view(xb.shape[0], Yb.shape[0])
        return torch.addmm(self.h[c0 : c0 + cols], xb, Yb.T, out=out)

    @torch.no_grad()
    def assign(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """``(max_j <x, y_j> + h_j, argmax_j)`` for every row of ``X``."""
        n, m = X.shape[0], self.n_cells
        best_val = X.new_empty(n)
        best_idx = torch.empty(n, dtype=torch.long, device=X.device)
        rows, cols, buf = self._buffer(n)
        for r0 in range(0, n, rows):
            xb = X[r0 : r0 + rows]
            val = idx = None
            for c0 in range(0, m, cols):
                v, i = _row_max(self._scores(buf, xb, c0, cols))
                if val is None:
                    val, idx = v, i
                else:
                    better = v > val
                    val = torch.where(better, v, val)
                    idx = torch.where(better, i + c0, idx)
            best_val[r0 : r0 + rows] = val
            best_idx[r0 : r0 + rows] = idx
        return best_val, best_idx

    @torch.no_grad()
    def top_k(self, X: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The ``k`` largest scores of every row, in decreasing order (tied ones: the lower
        cell first), and their cells (``k`` is capped at the number of cells)."""
        n, m = X.shape[0], self.n_cells
        k = min(k, m)
        vals = X.new_empty(n, k)
        idx = torch.empty(n, k, dtype=torch.long, device=X.device)
        rows, cols, buf = self._buffer(n)
        for r0 in range(0, n, rows):
            xb = X[r0 : r0 + rows]
            best_v = best_i = None
            for c0 in range(0, m, cols):
                s = self._scores(buf, xb, c0, cols)
                v, i = _row_topk(s, min(k, s.shape[1]))
                i += c0
                if best_v is not None:
                    v, j = torch.cat([best_v, v], 1).topk(k, dim=1)
                    i = torch.cat([best_i, i], 1).gather(1, j)
                best_v, best_i = v, i
            vals[r0 : r0 + rows] = best_v
            idx[r0 : r0 + rows] = best_i
        # torch.topk orders tied scores arbitrarily: the lower cell first, as in assign.
        for r0 in range(0, n, _SORT_ROWS):
            v, i = vals[r0 : r0 + _SORT_ROWS], idx[r0 : r0 + _SORT_ROWS]
            v[:], i[:] = _best(*_by_cell(v, i), k)
        return vals, idx

    @torch.no_grad()
    def scores_at(self, X: Tensor, index: Tensor) -> Tensor:
        """Scores ``<x_i, y_j> + h_j`` of every row ``i`` for its own cells ``j = index[i]``
        (``index`` of shape ``(n, k)``)."""
        k, d = index.shape[1], X.shape[1]
        out = X.new_empty(index.shape)
        rows = max(1, self.block_elements // max(k * d, 1))
        for r0 in range(0, X.shape[0], rows):
            cols = index[r0 : r0 + rows]
            out[r0 : r0 + rows] = (X[r0 : r0 + rows, None, :] * self.Y[cols]).sum(2) + self.h[cols]
        return out

    @torch.no_grad()
    def cell_sums(
        self,
        X: Tensor,
        weights: Tensor | None = None,
        values: Tensor | None = None,
        *,
        epsilon: float = 0.0,
        index: Tensor | None = None,
    ) -> CellSums:
        """Mass of every cell under weighted rows, and the weighted sums of ``values`` in it.

        Parameters
        ----------
        X : Tensor of shape (n, d)
            Source rows.
        weights : Tensor of shape (n,), optional
            Non-negative row weights (uniform ``1 / n`` when omitted).
        values : Tensor of shape (n, p), optional
            Per-row values to sum per cell (``X`` itself gives the barycentre sums).
        epsilon : float
            ``0``: hard cells. ``> 0``: every row spreads over the cells by the softmax of its
            scores at temperature ``epsilon`` (the entropic problem); the potential is then
            ``epsilon * logsumexp``.
        index : Tensor of shape (n,), optional
            The rows' cells when already known (hard cells only): no pass over the scores.
        """
        n = X.shape[0]
        if weights is None:
            weights = X.new_full((n,), 1.0 / n)
        if epsilon > 0:
            return self._soft_sums(X, weights, values, epsilon)
        potential = None
        if index is None:
            val, index = self.assign(X)
            potential = (weights * val).sum()
        # float64 counts: the marginal error is compared with tolerances near float32 resolution.
        # (bincount of no rows gives integer zeros: a rank of a distributed fit may have none)
        masses = torch.bincount(index, weights=weights.double(), minlength=self.n_cells).double()
        sums = None
        if values is not None:
            sums = torch.zeros(self.n_cells, values.shape[1], dtype=torch.float64, device=X.device)
            rows = max(1, self.block_elements // max(values.shape[1], 1))
            for r0 in range(0, n, rows):
                part = values[r0 : r0 + rows].double() * weights[r0 : r0 + rows, None].double()
                sums.index_add_(0, index[r0 : r0 + rows], part)
        return CellSums(masses, sums, potential, index)

    def _soft_sums(self, X: Tensor, w: Tensor, values: Tensor | None, epsilon: float) -> CellSums:
        n, m = X.shape[0], self.n_cells
        masses = X.new_zeros(m)
        sums = None if values is None else X.new_zeros(m, values.shape[1])
        total = X.new_zeros(())
        rows, cols, buf = self._buffer(n)
        for r0 in range(0, n, rows):
            xb, wb = X[r0 : r0 + rows], w[r0 : r0 + rows]
            vb = None if values is None else values[r0 : r0 + rows]
            if cols >= m:
                # All targets in one block: one product and one exp per score.
                s = self._scores(buf, xb, 0, m).div_(epsilon)
                top = s.amax(dim=1, keepdim=True)
                z = s.sub_(top).exp_().sum(dim=1)  # >= 1: the max contributes exp(0)
                masses += s.T @ (wb / z)
                if vb is not None:
                    sums += s.T @ (vb * (wb / z)[:, None])
                total = total + (wb * (top.squeeze(1) + z.log())).sum() * epsilon
                continue
            lse = self._row_logsumexp(buf, xb, cols, epsilon)
            for c0 in range(0, m, cols):
                p = self._scores(buf, xb, c0, cols).div_(epsilon).sub_(lse[:, None]).exp_()
                masses[c0 : c0 + cols] += p.T @ wb
                if vb is not None:
                    sums[c0 : c0 + cols] += p.T @ (vb * wb[:, None])
            total = total + (wb * lse).sum() * epsilon
        return CellSums(masses, sums, total, None)

    def _row_logsumexp(self, buf: Tensor, xb: Tensor, cols: int, epsilon: float) -> Tensor:
        """``logsumexp_j(s_ij / epsilon)`` of every row, over column blocks."""
        lse = None
        for c0 in range(0, self.n_cells, cols):
            part = torch.logsumexp(self._scores(buf, xb, c0, cols).div_(epsilon), dim=1)
            lse = part if lse is None else torch.logaddexp(lse, part)
        return lse

    @torch.no_grad()
    def soft_mean(self, X: Tensor, epsilon: float, values: Tensor | None = None) -> Tensor:
        """``sum_j softmax_j(s_ij / epsilon) v_j`` for every row: the entropic map with the
        default ``values = Y``."""
        V = self.Y if values is None else values
        n, m = X.shape[0], self.n_cells
        out = X.new_zeros(n, V.shape[1])
        rows, cols, buf = self._buffer(n)
        for r0 in range(0, n, rows):
            xb = X[r0 : r0 + rows]
            if cols >= m:
                s = self._scores(buf, xb, 0, m).div_(epsilon)
                s.sub_(s.amax(dim=1, keepdim=True)).exp_()
                out[r0 : r0 + rows] = (s @ V) / s.sum(dim=1, keepdim=True)
                continue
            lse = self._row_logsumexp(buf, xb, cols, epsilon)
            acc = out[r0 : r0 + rows]
            for c0 in range(0, m, cols):
                p = self._scores(buf, xb, c0, cols).div_(epsilon).sub_(lse[:, None]).exp_()
                acc += p @ V[c0 : c0 + cols]
        return out

    @torch.no_grad()
    def closest_to_enter(self, X: Tensor, cells: Tensor) -> tuple[Tensor, Tensor]:
        """For each cell of ``cells``, the row of ``X`` closest to entering it: the largest
        ``<x, y_j> + h_j - max_k (<x, y_k> + h_k)`` (``0`` for a row inside the cell).

        Returns that gap and the row's index, one entry per cell.
        """
        top, _ = self.assign(X)
        sub = PowerCells(self.Y[cells], self.h[cells], block_elements=self.block_elements)
        best = X.new_full((cells.shape[0],), -math.inf)
        arg = torch.zeros(cells.shape[0], dtype=torch.long, device=X.device)
        rows, cols, buf = sub._buffer(X.shape[0])
        for r0 in range(0, X.shape[0], rows):
            xb, ub = X[r0 : r0 + rows], top[r0 : r0 + rows, None]
            for c0 in range(0, sub.n_cells, cols):
                value, row = sub._scores(buf, xb, c0, cols).sub_(ub).max(dim=0)
                better = value > best[c0 : c0 + cols]
                best[c0 : c0 + cols] = torch.where(better, value, best[c0 : c0 + cols])
                arg[c0 : c0 + cols] = torch.where(better, row + r0, arg[c0 : c0 + cols])
        return best, arg


def shard_columns(n_cells: int, rank: int, size: int) -> slice:
    """The contiguous target columns of ``rank`` among ``size`` shards (sizes differ by at
    most one)."""
    base, extra = divmod(n_cells, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def merge_top_k(parts: list[tuple[Tensor, Tensor]], k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best of every row over shards: ``parts`` holds each shard's ``(values,
    cells)`` (global cell indices, ``-inf`` padding), in any order; ties go to the lower
    cell, as in :meth:`PowerCells.top_k`."""
    vals = torch.cat([v for v, _ in parts], 1)
    idx = torch.cat([i for _, i in parts], 1)
    return _best(*_by_cell(vals, idx), k)


class ShardedCells(PowerCells):
    """A :class:`PowerCells` whose full passes (:meth:`assign`, :meth:`top_k`) are split by
    target columns between the ranks of ``shards``: each rank scores its own slice of the
    targets (:func:`shard_columns`) for every row, and the ranks' best cells are merged after
    one all-gather (``shards.gather_tensor``). Every rank holds the same rows and gets the
    same result; every other pass is the plain one (it needs the full ``Y``, which every rank
    holds for the fitted map anyway).
    """

    def __init__(self, Y: Tensor, h: Tensor, shards, *, block_elements: int | None = None):
        super().__init__(Y, h, block_elements=block_elements)
        self.shards = shards
        self.columns = shard_columns(Y.shape[0], shards.rank, shards.size)
        self._local = PowerCells(
            Y[self.columns], self.h[self.columns], block_elements=self.block_elements
        )

    @torch.no_grad()
    def top_k(self, X: Tensor, k: int) -> tuple[Tensor, Tensor]:
        k = min(k, self.n_cells)
        local_k = min(k, self._local.n_cells)
        vals = X.new_full((X.shape[0], k), -math.inf)
        idx = torch.zeros(X.shape[0], k, dtype=torch.long, device=X.device)
        if local_k:
            v, i = self._local.top_k(X, local_k)
            vals[:, :local_k], idx[:, :local_k] = v, i + self.columns.start
        gathered_v = self.shards.gather_tensor(vals)
        gathered_i = self.shards.gather_tensor(idx)
        return merge_top_k(list(zip(gathered_v, gathered_i, strict=True)), k)

    @torch.no_grad()
    def assign(self, X: Tensor) -> tuple[Tensor, Tensor]:
        vals = X.new_full((X.shape[0], 1), -math.inf)
        idx = torch.zeros(X.shape[0], 1, dtype=torch.long, device=X.device)
        if self._local.n_cells:
            v, i = self._local.assign(X)  # the first maximum of the shard, as in assign
            vals[:, 0], idx[:, 0] = v, i + self.columns.start
        parts = zip(self.shards.gather_tensor(vals), self.shards.gather_tensor(idx), strict=True)
        vals, idx = merge_top_k(list(parts), 1)
        return vals[:, 0], idx[:, 0]


#: Rows per chunk of the per-row sorts over candidates: their temporaries stay small.
_SORT_ROWS = 2**16


def _index_dtype(n_cells: int) -> torch.dtype:
    """Stored candidate cells: int32 where it holds them (half the memory of int64)."""
    return torch.int32 if n_cells < 2**31 else torch.long


def _by_cell(vals: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's candidates in increasing cell order."""
    order = idx.argsort(dim=1)
    return vals.gather(1, order), idx.gather(1, order)


def _best(scores: Tensor, index: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest of each row's candidate scores (held in increasing cell order, so a
    stable sort puts the lower cell first on ties) and their cells."""
    vals, order = scores.sort(dim=1, descending=True, stable=True)
    return vals[:, :k], index.gather(1, order[:, :k])


def noise_floor(target_weight: Tensor, batch_size: int) -> float:
    """Expected marginal error of exact heights measured on a batch of ``batch_size`` samples.

    Cell counts are binomial: ``E|w_j - nu_j| ~ sqrt(2 nu_j (1 - nu_j) / (pi B))``, so the
    floor is ``1/2 sum_j`` of that (``0.5 sqrt(2 m / (pi B))`` for ``m`` uniform targets).
    """
    nu = target_weight.double()
    return 0.5 * float(torch.sqrt(2 * nu * (1 - nu) / (math.pi * batch_size)).sum())


def marginal_error(masses: Tensor, target_weight: Tensor) -> float:
    """Total variation ``1/2 sum_j |w_j - nu_j|`` between cell masses and target weights."""
    return 0.5 * float((masses - target_weight).abs().sum())
