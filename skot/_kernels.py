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
    "score_rounding",
]

#: Scores computed per block, by device type: the one block-size setting of the library. On a
#: CPU 4 MB of float32 scores, ~100 rows of 10,000 targets (the lane-wise passes ran 1.1-1.9x
#: faster than at 2**18, and the softmax passes no slower, one thread, d = 8-64); on a GPU
#: large enough to fill it.
BLOCK_ELEMENTS = {"cpu": 2**20, "cuda": 2**24}


def default_block_elements(device: torch.device | str) -> int:
    """Scores per block on ``device`` (:data:`BLOCK_ELEMENTS`)."""
    return BLOCK_ELEMENTS.get(torch.device(device).type, BLOCK_ELEMENTS["cpu"])


def _block_shape(n_rows: int, n_cols: int, block_elements: int) -> tuple[int, int]:
    """Rows and target columns per block: every column when that leaves at least
    :data:`_WIDE_ROWS` rows (a row's reduction then runs once, over all its scores), else
    column blocks of that many rows (at least 4096 columns); then as many rows as fit, in
    blocks of equal sizes (:func:`_balanced`)."""
    if n_cols * _WIDE_ROWS <= block_elements:
        cols = n_cols
    else:
        cols = max(1, min(n_cols, max(4096, block_elements // _WIDE_ROWS), block_elements))
    return _balanced(n_rows, block_elements // cols), cols


def _balanced(n_rows: int, rows: int) -> int:
    """At most ``rows`` rows per block, in blocks of equal sizes: no last block of one to three
    rows, whose product goes another way (its scores may differ from a full block's in the last
    bit)."""
    rows = max(1, min(n_rows, rows))
    return -(-n_rows // -(-n_rows // rows)) if n_rows else rows


#: Fewest rows of a block that holds every target column (the product needs rows to reach the
#: matrix-multiply speed; fewer and the targets are split into column blocks instead).
_WIDE_ROWS = 16

# The row reductions of the full passes on a CPU go lane-wise: a block of scores, padded with
# -inf to ``depth x lanes`` columns, is viewed as ``(rows, depth, lanes)``, lane ``q`` holding
# columns ``q, q + lanes, q + 2 lanes, ...``. The lane maxima are one ``amax`` over the middle
# dimension (vectorised, about 0.1 ns a score, when ``lanes`` is a multiple of 32: other counts
# run several times slower), whereas ``torch.max`` with indices and ``torch.topk`` cost 1-10 ns
# a score; so only the lane maxima and the few best lanes reach them. Exact: the k lanes with
# the largest maxima (whichever ties ``topk`` picks) hold the k largest scores.
_LANE_MULTIPLE = 32
#: Scores per lane: the argmax reads one lane, top-k reads ``k + 1`` (fastest of 4-128 on
#: 52 x 10,000 blocks at d = 64, one thread).
_MAX_DEPTH = 64
_TOPK_DEPTH = 8
#: Device types whose row reductions go lane-wise (faster there; the GPU benchmark measures both).
GROUPED_REDUCTIONS = {"cpu"}


def _lanes(cols: int, depth: int) -> tuple[int, int]:
    """``(lanes, depth)`` of a block of ``cols`` columns: lanes a multiple of
    :data:`_LANE_MULTIPLE`, about ``depth`` scores each, ``lanes * depth >= cols``."""
    lanes = max(_LANE_MULTIPLE, cols // depth // _LANE_MULTIPLE * _LANE_MULTIPLE)
    return lanes, -(-cols // lanes)


def _padded(s: Tensor, lanes: int, depth: int) -> Tensor:
    """``s`` in a ``(rows, lanes * depth)`` tensor, padded with -inf (for the helpers below)."""
    out = s.new_full((s.shape[0], lanes * depth), -math.inf)
    out[:, : s.shape[1]] = s
    return out


def _lane_max(p: Tensor, cols: int, lanes: int, depth: int) -> tuple[Tensor, Tensor]:
    """``p[:, :cols].max(dim=1)`` (values and first index) of a padded block ``p`` of
    ``lanes * depth`` columns (-inf past ``cols``)."""
    r = p.shape[0]
    if p.device.type not in GROUPED_REDUCTIONS or depth < 2:
        return p[:, :cols].max(dim=1)
    s3 = p.view(r, depth, lanes)
    top = s3.amax(dim=1)
    val, lane = top.max(dim=1)  # the first lane holding the max
    inside = s3.gather(2, lane.view(r, 1, 1).expand(r, depth, 1)).view(r, depth)
    col = inside.argmax(dim=1).mul_(lanes).add_(lane)  # its first max: the lowest column
    # The max in several lanes: a lower column may sit in a later lane (rows of equal scores).
    tied = (top == val[:, None]).sum(dim=1) > 1
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        col[rows] = p[rows, :cols].max(dim=1).indices
    return val, col


def _lane_topk(p: Tensor, cols: int, k: int, lanes: int, depth: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest of ``p[:, :cols]`` in decreasing order and their columns (tied ones in
    any order, as ``topk``) for a padded block ``p`` of ``lanes * depth`` columns."""
    r = p.shape[0]
    if p.device.type not in GROUPED_REDUCTIONS or depth < 2 or lanes < 2 * k:
        return p[:, :cols].topk(k, dim=1)
    s3 = p.view(r, depth, lanes)
    best = s3.amax(dim=1).topk(k, dim=1, sorted=False).indices  # the k best lanes
    inside = s3.gather(2, best[:, None, :].expand(r, depth, k)).view(r, depth * k)
    val, pos = inside.topk(k, dim=1)
    col = best.gather(1, pos % k).add_(pos.div_(k, rounding_mode="floor").mul_(lanes))
    return val, col


def _row_max(s: Tensor) -> tuple[Tensor, Tensor]:
    """``s.max(dim=1)`` (values and first index of the max), lane-wise on a CPU."""
    lanes, depth = _lanes(s.shape[1], _MAX_DEPTH)
    return _lane_max(_padded(s, lanes, depth), s.shape[1], lanes, depth)


def _row_topk(s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``s.topk(k, dim=1)``, lane-wise on a CPU."""
    lanes, depth = _lanes(s.shape[1], _TOPK_DEPTH)
    return _lane_topk(_padded(s, lanes, depth), s.shape[1], k, lanes, depth)


def _exact_top_k(s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest of every row of ``s`` with ties to the lower column, in decreasing
    order (tied ones: the lower column first): the rows whose ``k``-th and ``k + 1``-th largest
    tie, where ``topk`` may return any of them."""
    t = s.topk(k, dim=1).values[:, -1:]  # the k-th largest: every larger score is taken
    above, tie = s > t, s == t
    need = k - above.sum(dim=1, keepdim=True)  # then the first `need` scores equal to it
    take = above | (tie & (tie.cumsum(dim=1) <= need))
    if not bool((take.sum(dim=1) == k).all()):  # nan scores: compare as nothing
        vals, cols = s.sort(dim=1, descending=True, stable=True)
        return vals[:, :k], cols[:, :k]
    cols = take.nonzero()[:, 1].view(s.shape[0], k)  # increasing columns in each row
    return _best(s.gather(1, cols), cols, k)


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

    def _lane_blocks(self, X: Tensor, depth: int):
        """The scores of ``X`` block by block, for :meth:`assign` and :meth:`top_k`: yields
        ``(r0, c0, p, cols, lanes, depth)``, the scores of rows ``r0 :`` against targets
        ``c0 : c0 + cols`` in ``p[:, :cols]``, ``p`` of ``lanes * depth`` columns padded with
        -inf (on a CPU, for the lane-wise reductions). One buffer serves every block; its
        padding is written again only when the block's layout changes."""
        n, m = X.shape[0], self.n_cells
        rows, cols = _block_shape(n, m, self.block_elements)
        grouped = X.device.type in GROUPED_REDUCTIONS
        layout = {}
        for c0 in range(0, m, cols):
            w = min(cols, m - c0)
            lanes, dd = _lanes(w, depth)
            layout[w] = (lanes, dd) if grouped and dd >= 2 else (w, 1)
        width = max(lanes * dd for lanes, dd in layout.values())
        rows = _balanced(n, self.block_elements // width)
        buf = self.Y.new_empty(rows * width)
        last = None
        for r0 in range(0, n, rows):
            xb = X[r0 : r0 + rows]
            r = xb.shape[0]
            for c0 in range(0, m, cols):
                w = min(cols, m - c0)
                lanes, dd = layout[w]
                p = buf[: r * lanes * dd].view(r, lanes * dd)
                if lanes * dd > w and last != (r, w):
                    p[:, w:].fill_(-math.inf)
                last = (r, w)
                torch.addmm(self.h[c0 : c0 + w], xb, self.Y[c0 : c0 + w].T, out=p[:, :w])
                yield r0, c0, p, w, lanes, dd

    @torch.no_grad()
    def assign(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """``(max_j <x, y_j> + h_j, argmax_j)`` for every row of ``X``."""
        n, m = X.shape[0], self.n_cells
        best_val = X.new_empty(n)
        best_idx = torch.empty(n, dtype=torch.long, device=X.device)
        val = idx = None
        for r0, c0, p, cols, lanes, depth in self._lane_blocks(X, _MAX_DEPTH):
            v, i = _lane_max(p, cols, lanes, depth)
            if c0 == 0:
                val, idx = v, i
            else:
                better = v > val  # ties keep the lower index
                val = torch.where(better, v, val)
                idx = torch.where(better, i + c0, idx)
            if c0 + cols == m:
                best_val[r0 : r0 + p.shape[0]] = val
                best_idx[r0 : r0 + p.shape[0]] = idx
        return best_val, best_idx

    @torch.no_grad()
    def top_k(self, X: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The ``k`` largest scores of every row, in decreasing order (tied ones: the lower
        cell first), and their cells (``k`` is capped at the number of cells); among scores
        tied with the ``k``-th largest, the lower cells are taken."""
        n, m = X.shape[0], self.n_cells
        k = min(k, m)
        k1 = min(k + 1, m)  # one more: the k-th and the next tell whether the k best are unique
        vals = X.new_empty(n, k)
        idx = torch.empty(n, k, dtype=torch.long, device=X.device)
        again = []
        best_v = best_i = None
        for r0, c0, p, cols, lanes, depth in self._lane_blocks(X, _TOPK_DEPTH):
            v, i = _lane_topk(p, cols, min(k1, cols), lanes, depth)
            if c0 == 0:
                best_v, best_i = v, i
            else:
                v, j = torch.cat([best_v, v], 1).topk(min(k1, best_v.shape[1] + cols), dim=1)
                best_i = torch.cat([best_i, i + c0], 1).gather(1, j)
                best_v = v
            if c0 + cols < m:
                continue
            # topk keeps any of tied scores: where the k-th ties with the next, the k best
            # cells are not unique and the row is chosen again, exactly.
            if k1 > k:
                tied = (best_v[:, k - 1] == best_v[:, k]).nonzero().squeeze(1)
                if tied.numel() and cols == m:
                    best_v[tied, :k], best_i[tied, :k] = _exact_top_k(p[tied, :m], k)
                elif tied.numel():
                    again.append(tied + r0)
            vals[r0 : r0 + p.shape[0]] = best_v[:, :k]
            idx[r0 : r0 + p.shape[0]] = best_i[:, :k]
        if again:
            rows = torch.cat(again)
            step = max(1, self.block_elements // m)
            for s0 in range(0, rows.numel(), step):
                part = rows[s0 : s0 + step]
                dense = torch.addmm(self.h, X[part], self.Y.T)
                vals[part], idx[part] = _exact_top_k(dense, k)
        # topk orders tied scores arbitrarily: the lower cell first, as in assign.
        for r0 in range(0, n if k > 1 else 0, _SORT_ROWS):
            v, i = vals[r0 : r0 + _SORT_ROWS], idx[r0 : r0 + _SORT_ROWS]
            tied = (v[:, 1:] == v[:, :-1]).any(dim=1).nonzero().squeeze(1)
            if tied.numel():
                v[tied], i[tied] = _best(*_by_cell(v[tied], i[tied]), k)
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
    def best_outside(self, X: Tensor, excluded: Tensor) -> Tensor:
        """The largest score of every row of ``X`` over the cells not in its row of
        ``excluded`` (shape ``(n, k)``; entries equal to ``n_cells`` exclude nothing), ``-inf``
        where no cell is left."""
        n, m = X.shape[0], self.n_cells
        out = X.new_empty(n)
        rows = max(1, self.block_elements // (m + 1))
        buf = self.Y.new_empty(rows * (m + 1))
        for r0 in range(0, n, rows):
            xb = X[r0 : r0 + rows]
            dense = buf[: xb.shape[0] * (m + 1)].view(xb.shape[0], m + 1)
            dense[:, m].fill_(-math.inf)
            torch.addmm(self.h, xb, self.Y.T, out=dense[:, :m])
            dense.scatter_(1, excluded[r0 : r0 + rows], -math.inf)
            out[r0 : r0 + rows] = dense.max(dim=1).values
        return out

    @torch.no_grad()
    def closest_to_enter(
        self, X: Tensor, cells: Tensor, top: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """For each cell of ``cells``, the row of ``X`` closest to entering it: the largest
        ``<x, y_j> + h_j - max_k (<x, y_k> + h_k)`` (``0`` for a row inside the cell).

        ``top``: the rows' best scores (:meth:`assign`'s values), when already computed.
        Returns that gap and the row's index, one entry per cell.
        """
        if top is None:
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


def score_rounding(X: Tensor, Y: Tensor, h: Tensor, dtype: torch.dtype) -> float:
    """A bound on the rounding error of any score ``<x, y_j> + h_j`` of rows ``X`` computed in
    ``dtype`` (the inputs rounded to it, a ``d``-term dot product, the height added):
    ``(d + 2) eps (max |x| max |y| + max |h|)``, ``eps`` the machine epsilon of ``dtype``."""
    if not (X.shape[0] and Y.shape[0]):
        return 0.0
    size = float(X.norm(dim=1).max()) * float(Y.norm(dim=1).max()) + float(h.abs().max())
    return (X.shape[1] + 2) * torch.finfo(dtype).eps * size


def marginal_error(masses: Tensor, target_weight: Tensor) -> float:
    """Total variation ``1/2 sum_j |w_j - nu_j|`` between cell masses and target weights."""
    return 0.5 * float((masses - target_weight).abs().sum())
