"""Each row's best cells kept between passes at moving heights (pure torch).

:class:`Candidates` remembers, for every source row, its ``width`` best cells and a certified
bound on the others, so that a new top-k pass at moved heights rescores only them (no product),
with a full pass (:meth:`PowerCells.top_k <._kernels.PowerCells.top_k>`) for the rows whose
bound fails. Exact: the same top ``k`` as a full pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._kernels import _SORT_ROWS, PowerCells, _best, _by_cell, _index_dtype

__all__ = ["Candidates"]


class Candidates:
    """Each row's ``width`` best cells at reference heights, and a certified bound on the rest.

    Heights move from ``h0`` to ``h1`` by ``delta``: every score moves by its cell's
    ``delta_j``, so a cell outside a row's candidates scores at most the row's ``width``-th
    reference score (its floor) plus ``delta_j``. :meth:`top_k` rescores the candidates
    (reference score plus ``delta``, no product). A row whose ``k``-th candidate beats
    ``floor + max_j delta_j`` by more than a rounding allowance has the same top ``k`` as a full
    pass. For the other rows only the cells whose ``delta_j`` reaches that gap can enter: they
    are scored (the cells that moved up most, often a small share), or, where they are many,
    the row gets a full pass and fresh candidates at the new heights (a row remembers which
    reference heights its scores are at, one of at most ``max_references``).

    Parameters
    ----------
    cells : PowerCells
        The diagram at the first reference heights.
    X : Tensor of shape (n, d)
        Source rows; every later :meth:`top_k` is over these rows.
    width : int
        Candidates kept per row (capped at the number of cells).
    max_references : int
        Reference height vectors kept; when all are in use, every row is refreshed.

    Attributes
    ----------
    n_full : int
        Rows that the last :meth:`top_k` (or the constructor) sent to a full pass.
    n_scores : int
        Scores (products) that it computed, ``n * m`` for a full pass.
    """

    #: A row is refreshed by a full pass when more than this share of the cells could enter.
    FULL_SHARE = 0.25

    def __init__(self, cells: PowerCells, X: Tensor, width: int = 16, max_references: int = 8):
        self.X = X
        self.width = min(width, cells.n_cells)
        self.max_references = max(1, max_references)
        d = X.shape[1]
        # Worst-case rounding of one score (a d-term dot product plus a height), for the three
        # scores each certificate compares: a full pass's, a reference's and a rescored one.
        self._unit = 4 * (d + 2) * torch.finfo(X.dtype).eps
        self._x_norm = X.norm(dim=1)
        self._y_norm = float(cells.Y.norm(dim=1).max())
        self._refresh_all(cells)

    def _refresh_all(self, cells: PowerCells) -> None:
        self.scores = self.index = None  # freed before the new ones are built
        vals, idx = cells.top_k(self.X, self.width)
        self.floor = vals[:, -1].clone()  # each row's width-th score: the others are below
        for r0 in range(0, vals.shape[0], _SORT_ROWS):
            v, i = vals[r0 : r0 + _SORT_ROWS], idx[r0 : r0 + _SORT_ROWS]
            v[:], i[:] = _by_cell(v, i)
        self.scores, self.index = vals, idx.to(_index_dtype(cells.n_cells))
        del idx
        self.reference = torch.zeros(self.X.shape[0], dtype=torch.long, device=self.X.device)
        self.heights = cells.h.clone()[None]
        self.n_full = self.X.shape[0]
        self.n_scores = self.X.shape[0] * cells.n_cells

    @torch.no_grad()
    def top_k(self, cells: PowerCells, k: int) -> tuple[Tensor, Tensor]:
        """:meth:`PowerCells.top_k` of the rows at the heights of ``cells`` (same targets):
        the ``k`` largest scores in decreasing order (ties among candidates: the lower cell
        first) and their cells."""
        k = min(k, self.width)
        n, m = self.X.shape[0], cells.n_cells
        delta = cells.h[None] - self.heights  # (references, m)
        ref = self.reference
        flat = delta.reshape(-1)
        scores = torch.empty_like(self.scores)
        vals = scores.new_empty(n, k)
        idx = torch.empty(n, k, dtype=torch.long, device=scores.device)
        for r0 in range(0, n, _SORT_ROWS):  # in row chunks: bounded temporaries
            rows = slice(r0, r0 + _SORT_ROWS)
            at = (ref[rows] * m)[:, None] + self.index[rows]
            torch.add(self.scores[rows], flat[at], out=scores[rows])
            vals[rows], idx[rows] = _best(scores[rows], self.index[rows], k)
        self.n_full = self.n_scores = 0
        if self.width >= m:
            return vals, idx
        h_max = float(cells.h.abs().max()) + float(self.heights.abs().max())
        slack = self._unit * (self._x_norm * self._y_norm + h_max)
        # A cell outside the candidates can enter only if its delta reaches `need`.
        need = vals[:, -1] - self.floor - slack
        fail = (need <= delta.amax(dim=1)[ref]).nonzero().squeeze(1)
        if fail.shape[0] == 0:
            return vals, idx
        ranked, entering = [], fail.new_empty(fail.shape)
        for r in range(self.heights.shape[0]):
            at_r = ref[fail] == r
            if not bool(at_r.any()):
                ranked.append(None)
                continue
            up, order = delta[r].sort(descending=True)
            ranked.append(order)
            entering[at_r] = torch.searchsorted(-up, -need[fail[at_r]], right=True)
        full = entering > self.FULL_SHARE * m
        slot = self._slot(fail[full]) if bool(full.any()) else -1
        if slot is None or int(entering.sum()) > n * m // 2:
            del scores, vals
            self._refresh_all(cells)  # cheaper than the parts: one pass resets every bound
            vals, idx = self.scores.new_empty(n, k), idx
            for r0 in range(0, n, _SORT_ROWS):
                rows = slice(r0, r0 + _SORT_ROWS)
                vals[rows], idx[rows] = _best(self.scores[rows], self.index[rows], k)
            return vals, idx
        if slot >= 0:
            rows = fail[full]
            fv, fi = cells.top_k(self.X[rows], self.width)
            self.floor[rows] = fv[:, -1]
            fv, fi = _by_cell(fv, fi)
            self.scores[rows], self.index[rows], self.reference[rows] = (
                fv,
                fi.to(self.index.dtype),
                slot,
            )
            self.heights[slot] = cells.h
            vals[rows], idx[rows] = _best(fv, fi, k)
            self.n_full = int(rows.shape[0])
            self.n_scores = self.n_full * m
        part = ~full
        self._score_entering(cells, k, fail[part], entering[part], ranked, scores, vals, idx)
        return vals, idx

    def _score_entering(self, cells, k, rows, entering, ranked, scores, vals, idx) -> None:
        """Top ``k`` of ``rows`` over their candidates and the cells that could enter (the
        first ``entering`` of their reference's cells ranked by increase), in place."""
        # Rows of one reference in groups of about the same count (powers of two), each
        # scored against the same leading cells.
        length = torch.where(entering > 0, entering, 1)
        group = (length.double().log2().ceil()).long()
        key = self.reference[rows] * 64 + group
        for value in torch.unique(key).tolist():
            r, g = divmod(value, 64)
            sel = key == value
            sub_rows = rows[sel]
            top = min(int(entering[sel].max()), 2**g, cells.n_cells)
            cols = ranked[r][:top]
            sub = PowerCells(cells.Y[cols], cells.h[cols], block_elements=cells.block_elements)
            kk = min(k, top)
            self.n_scores += sub_rows.shape[0] * top
            for r0 in range(0, sub_rows.shape[0], _SORT_ROWS):  # bounded temporaries
                part = sub_rows[r0 : r0 + _SORT_ROWS]
                pv, pi = sub.top_k(self.X[part], kk)
                pi = cols[pi]
                cand = self.index[part].long()
                pv = pv.masked_fill((pi[:, :, None] == cand[:, None, :]).any(2), -torch.inf)
                both = _by_cell(torch.cat([scores[part], pv], 1), torch.cat([cand, pi], 1))
                vals[part], idx[part] = _best(*both, k)

    def _slot(self, rows: Tensor) -> int | None:
        """A reference slot for new heights once ``rows`` leave theirs: one no other row uses,
        or a new one; ``None`` when all ``max_references`` are in use."""
        keep = torch.ones_like(self.reference, dtype=torch.bool)
        keep[rows] = False
        used = torch.bincount(self.reference[keep], minlength=self.heights.shape[0])
        free = (used == 0).nonzero()
        if free.numel():
            return int(free[0])
        if self.heights.shape[0] < self.max_references:
            self.heights = torch.cat([self.heights, self.heights[:1]])
            return self.heights.shape[0] - 1
        return None
