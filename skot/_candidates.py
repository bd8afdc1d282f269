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
        Reference height vectors kept; when all are in use, the rows of the least-used one
        move to the current heights (their bound grows by that reference's largest rise).

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
        self._refresh_all(cells)

    def _refresh_all(self, cells: PowerCells) -> None:
        self.scores = self.index = None  # freed before the new ones are built
        self._y_norm = float(cells.Y.norm(dim=1).max())
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
        self._min_valid = self.width

    @classmethod
    def kept_or_new(
        cls, kept: Candidates | None, cells: PowerCells, X: Tensor, width: int
    ) -> Candidates:
        """``kept`` (candidates from an earlier fit) if it :meth:`covers` the rows ``X`` and the
        cells of ``cells``, else new candidates of ``X`` at ``cells`` (a full pass)."""
        if kept is not None and (kept.covers(X, cells.n_cells) or kept.extend(cells, X)):
            return kept
        return cls(cells, X, width)

    def covers(self, X: Tensor, n_cells: int) -> bool:
        """Whether these candidates are of the rows ``X`` (the same values; then they become
        the rows every later pass is over) and of ``n_cells`` cells."""
        if self.heights.shape[1] != n_cells:
            return False
        same = self.X is X or (
            self.X.shape == X.shape
            and self.X.dtype == X.dtype
            and self.X.device == X.device
            and bool(torch.equal(self.X, X))
        )
        if same:
            self.X = X
        return same

    @torch.no_grad()
    def extend(self, cells: PowerCells, X: Tensor, held: Tensor | None = None) -> bool:
        """Take the rows ``X`` if these candidates' rows are among them: rows ``held`` of
        ``X`` (a cold fit's subsample), or its first rows when ``held`` is ``None`` (a
        stream's buffer grown since its last solve). The other rows get candidates by a full
        pass at the heights of ``cells`` and a reference of their own; the rows already held
        keep theirs (their bounds cover the heights' moves). Returns whether ``X`` was taken;
        when it is not, nothing changes."""
        n0, n = self.X.shape[0], X.shape[0]
        if (
            n <= n0
            or X.shape[1:] != self.X.shape[1:]
            or X.dtype != self.X.dtype
            or X.device != self.X.device
            or self.heights.shape[1] != cells.n_cells
            or self.width > cells.n_cells
            or (held is not None and held.shape != (n0,))
        ):
            return False
        if not bool(torch.equal(X[:n0] if held is None else X[held], self.X)):
            return False
        if held is None:
            held = torch.arange(n0, device=X.device)
        slot = self._free_slot(cells, self.reference.new_empty(0))
        fresh = torch.ones(n, dtype=torch.bool, device=X.device)
        fresh[held] = False
        fresh = fresh.nonzero().squeeze(1)
        scores = self.scores.new_empty(n, self.width)
        index = self.index.new_empty(n, self.width)
        floor = self.floor.new_empty(n)
        reference = self.reference.new_empty(n)
        scores[held], index[held] = self.scores, self.index
        floor[held], reference[held] = self.floor, self.reference
        self.scores, self.index, self.floor, self.reference = scores, index, floor, reference
        self.X, self._x_norm = X, X.norm(dim=1)
        self._y_norm = max(self._y_norm, float(cells.Y.norm(dim=1).max()))
        self.n_scores = 0
        self._refresh_rows(cells, fresh, slot)
        return True

    @torch.no_grad()
    def retarget(self, Y_old: Tensor, cells: PowerCells, previous: Tensor) -> None:
        """Carry the candidates over to a changed target, in place, with no full pass.

        ``cells``: the new target points and the heights ``h`` the next passes start from;
        ``previous``: for each new point the index of the old point (rows of ``Y_old``) it
        continues, ``-1`` for a new point. A continued point keeps its reference heights; if
        it moved by ``dy_j``, its candidate scores are recomputed at the new position, the
        mean move ``t`` enters each row's bound exactly (``<x, t>``) and the rest lowers the
        point's reference heights by the most it can add to a score (``max_i |x_i| |dy_j -
        t|``), so that the next pass's certificate counts it as a rise. Candidates of removed
        points are dropped (placeholders: one of the row's cells again, at ``-inf``); a row
        left with fewer than half its width gets a full pass, and all rows do when more than
        :attr:`FULL_SHARE` of the candidates were removed. New points are scored against
        every row (``n`` times their number) and enter a row's list where they rank in its
        best ``width``; the bound also covers those that did not.
        """
        Y, h = cells.Y, cells.h
        m, n, dev = Y.shape[0], self.X.shape[0], Y.device
        if self.width >= m or self.width >= Y_old.shape[0] or not bool((previous >= 0).any()):
            self.width = min(self.width, m)
            self._refresh_all(cells)
            return
        points = torch.arange(m, device=dev)
        kept = previous >= 0
        new_of_old = torch.full((Y_old.shape[0],), -1, dtype=torch.long, device=dev)
        new_of_old[previous[kept]] = points[kept]
        # A point continued twice (duplicate ids or coordinates): the second one is new.
        continued = kept.clone()
        continued[kept] = new_of_old[previous[kept]] == points[kept]
        fresh = (~continued).nonzero().squeeze(1)
        index = new_of_old[self.index.long()]
        valid = index >= 0
        if float(valid.float().mean()) < 1 - self.FULL_SHARE:
            # Many candidates removed: the lists would lack the cells that take their place,
            # and the warm start reads them. One full pass.
            self._refresh_all(cells)
            return
        first = valid.to(torch.int8).argmax(dim=1, keepdim=True)
        index = torch.where(valid, index, index.gather(1, first)).clamp_min(0)
        # Reference heights of the new points: a moved point's lowered by the most its move
        # (beyond the mean move, which the rows' bounds take exactly) can add to a score.
        old = previous.clamp_min(0)
        heights = self.heights[:, old]
        heights[:, fresh] = h[fresh]
        dy = (Y - Y_old[old]).double()
        dy[~continued] = 0.0
        floor = self.floor.clone()
        self._y_norm = max(self._y_norm, float(Y.norm(dim=1).max()))
        if bool(dy.any()):
            t = dy[continued].mean(dim=0)
            reach = float(self._x_norm.max()) * (dy - t).norm(dim=1)
            heights[:, continued] -= reach[continued].to(heights.dtype)
            floor += (self.X.double() @ t).to(floor.dtype)
        h_max = float(h.abs().max()) + float(heights.abs().max())
        floor += self._unit * (self._x_norm * self._y_norm + h_max)  # the bound is computed
        if bool(dy.any()):
            zero = PowerCells(Y, torch.zeros_like(h), block_elements=cells.block_elements)
            scores = zero.scores_at(self.X, index)
            flat = heights.reshape(-1)
            for r0 in range(0, n, _SORT_ROWS):
                rows = slice(r0, r0 + _SORT_ROWS)
                scores[rows] += flat[(self.reference[rows] * m)[:, None] + index[rows]]
        else:  # no point moved: a continued candidate keeps its score (same point, heights)
            scores = self.scores
        scores[~valid] = -torch.inf
        self.index = self.scores = None
        if fresh.numel():
            sub = PowerCells(Y[fresh], h[fresh], block_elements=cells.block_elements)
            fv, fi = sub.top_k(self.X, min(self.width, fresh.numel()))
            if fresh.numel() > self.width:
                floor = torch.maximum(floor, fv[:, -1])  # the new points that did not rank
            for r0 in range(0, n, _SORT_ROWS):
                rows = slice(r0, r0 + _SORT_ROWS)
                v = torch.cat([scores[rows], fv[rows]], 1)
                i = torch.cat([index[rows], fresh[fi[rows]]], 1)
                v, pos = v.topk(self.width + 1, dim=1)
                floor[rows] = torch.maximum(floor[rows], v[:, -1])  # the entry that left
                valid[rows] = v[:, :-1] > -torch.inf
                scores[rows], index[rows] = _by_cell(v[:, :-1], i.gather(1, pos[:, :-1]))
            del fv, fi
        else:  # the new indices need not keep the old order
            for r0 in range(0, n, _SORT_ROWS):
                rows = slice(r0, r0 + _SORT_ROWS)
                scores[rows], index[rows] = _by_cell(scores[rows], index[rows])
        self.scores, self.index, self.floor = scores, index.to(_index_dtype(m)), floor
        self.heights = heights
        counts = valid.sum(dim=1)
        short = (counts < max(self.width // 2, 1)).nonzero().squeeze(1)
        self.n_full, self.n_scores = 0, n * fresh.numel()
        if short.numel():
            # With every reference in use, the fewest-used one moves to the current heights:
            # the short rows' pass, not every row's.
            self._refresh_rows(cells, short, self._free_slot(cells, short))
            counts[short] = self.width
        self._min_valid = int(counts.min())

    def _rescore(self, cells: PowerCells, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(delta, scores, vals, idx)``: the heights' moves from each reference, every
        candidate's score at the heights of ``cells``, and each row's ``k`` best of them."""
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
        return delta, scores, vals, idx

    @torch.no_grad()
    def rescored(self, cells: PowerCells, k: int) -> tuple[Tensor, Tensor]:
        """Each row's ``k`` best candidates at the heights of ``cells``, in decreasing order,
        with no certificate: a start (the best cells among the candidates, not necessarily
        among all cells). ``k`` is capped at :attr:`min_valid`."""
        _, _, vals, idx = self._rescore(cells, min(k, self.min_valid))
        return vals, idx

    @property
    def min_valid(self) -> int:
        """Candidates that every row holds (after :meth:`retarget` dropped removed points,
        the other entries of a row may be placeholders)."""
        return self._min_valid

    @torch.no_grad()
    def top_k(self, cells: PowerCells, k: int, screen=None) -> tuple[Tensor, Tensor] | None:
        """:meth:`PowerCells.top_k` of the rows at the heights of ``cells`` (same targets):
        the ``k`` largest scores in decreasing order (ties among candidates: the lower cell
        first) and their cells (``k`` is capped at :attr:`min_valid`).

        ``screen``, if given, is first called with each row's ``k`` best rescored candidates
        less its rounding allowance, elementwise at most the ``k`` largest scores of a full
        pass (the ``i``-th largest of a subset is at most the ``i``-th largest of all); when
        it returns true, ``None`` is returned with no product and the candidates unchanged.
        """
        k = min(k, self.min_valid)
        n, m = self.X.shape[0], cells.n_cells
        delta, scores, vals, idx = self._rescore(cells, k)
        if screen is not None and screen(vals - self._slack(cells)[:, None]):
            return None
        ref = self.reference
        self.n_full = self.n_scores = 0
        if self.width >= m:
            return vals, idx
        slack = self._slack(cells)
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
            ranked.append((up, order))
            entering[at_r] = torch.searchsorted(-up, -need[fail[at_r]], right=True)
        full = entering > self.FULL_SHARE * m
        if int(entering.sum()) > n * m // 2:
            del scores, vals
            self._refresh_all(cells)  # cheaper than the parts: one pass resets every bound
            vals, idx = self.scores.new_empty(n, k), idx
            for r0 in range(0, n, _SORT_ROWS):
                rows = slice(r0, r0 + _SORT_ROWS)
                vals[rows], idx[rows] = _best(self.scores[rows], self.index[rows], k)
            return vals, idx
        slot = self._slot(fail)  # where the failing rows go, at the current heights
        if slot is None:
            slot = self._merge_fewest(scores, delta, slack)
        if bool(full.any()):
            rows = fail[full]
            vals[rows], idx[rows] = self._refresh_rows(cells, rows, slot, k)
        part = ~full
        self._score_entering(
            cells, k, fail[part], entering[part], ranked, scores, vals, idx, slot, slack
        )
        return vals, idx

    def _slack(self, cells: PowerCells) -> Tensor:
        """Each row's rounding allowance for comparing its scores at the heights of
        ``cells`` with those at its reference heights."""
        h_max = float(cells.h.abs().max()) + float(self.heights.abs().max())
        return self._unit * (self._x_norm * self._y_norm + h_max)

    def _refresh_rows(
        self, cells: PowerCells, rows: Tensor, slot: int, k: int | None = None
    ) -> tuple[Tensor, Tensor] | None:
        """Fresh candidates of ``rows`` by a full pass at the heights of ``cells`` (in row
        chunks: bounded temporaries), stored at reference ``slot``; with ``k``, returns the
        rows' ``k`` best (in decreasing order, as :func:`_best`)."""
        if k is not None:
            vals = self.scores.new_empty(rows.shape[0], k)
            idx = torch.empty(rows.shape[0], k, dtype=torch.long, device=rows.device)
        for r0 in range(0, rows.shape[0], _SORT_ROWS):
            part = rows[r0 : r0 + _SORT_ROWS]
            fv, fi = cells.top_k(self.X[part], self.width)
            self.floor[part] = fv[:, -1]
            fv, fi = _by_cell(fv, fi)
            self.scores[part], self.index[part] = fv, fi.to(self.index.dtype)
            if k is not None:
                vals[r0 : r0 + _SORT_ROWS], idx[r0 : r0 + _SORT_ROWS] = _best(fv, fi, k)
        self.reference[rows] = slot
        self.heights[slot] = cells.h
        self.n_full = int(rows.shape[0])
        self.n_scores += self.n_full * cells.n_cells
        return None if k is None else (vals, idx)

    def _score_entering(
        self, cells, k, rows, entering, ranked, scores, vals, idx, slot, slack
    ) -> None:
        """Top ``k`` of ``rows`` over their candidates and the cells that could enter (the
        first ``entering`` of their reference's cells ranked by increase), in place.

        The rows also move to reference ``slot``, at the current heights, with no full pass:
        their best ``width`` of the cells scored become their candidates, and their bound
        covers the cells not scored (the row's bound plus the largest increase among them)
        and those scored that did not rank.
        """
        # Rows of one reference in groups of about the same count (powers of two), each
        # scored against the same leading cells.
        length = torch.where(entering > 0, entering, 1)
        group = (length.double().log2().ceil()).long()
        key = self.reference[rows] * 64 + group
        m = cells.n_cells
        for value in torch.unique(key).tolist():
            r, g = divmod(value, 64)
            sel = key == value
            sub_rows = rows[sel]
            top = min(int(entering[sel].max()), 2**g, m)
            up, order = ranked[r]
            cols = order[:top]
            sub = PowerCells(cells.Y[cols], cells.h[cols], block_elements=cells.block_elements)
            kk = min(self.width, top)
            self.n_scores += sub_rows.shape[0] * top
            # Most rows that fail the certificate keep their candidates: no scored cell beats
            # their lowest one. Those rows move to the current heights with no merge or sort.
            sub_rows = self._keep_unbeaten(sub_rows, sub, order, top, scores, up, slack)
            for r0 in range(0, sub_rows.shape[0], _SORT_ROWS):  # bounded temporaries
                part = sub_rows[r0 : r0 + _SORT_ROWS]
                pv, pi = sub.top_k(self.X[part], kk)
                unranked = pv[:, -1].clone() if top > kk else None  # before the duplicates go
                pi = cols[pi]
                cand = self.index[part].long()
                pv = pv.masked_fill((pi[:, :, None] == cand[:, None, :]).any(2), -torch.inf)
                both = _by_cell(torch.cat([scores[part], pv], 1), torch.cat([cand, pi], 1))
                vals[part], idx[part] = _best(*both, k)
                self._rebase(part, *both, unranked, up, top, slack)
        self.reference[rows] = slot
        self.heights[slot] = cells.h

    def _keep_unbeaten(self, rows, sub, order, top, scores, up, slack) -> Tensor:
        """Of ``rows``, scored against ``sub`` (the first ``top`` cells of ``order``), rebase
        those whose candidates all beat every scored cell outside them: their candidates stay,
        at their ``scores`` at the current heights, their bound becomes the best such cell (or
        the row's bound plus ``up[top]``, the largest increase among the cells not scored).
        Their top ``k`` is that of their candidates, as :meth:`_rescore` gave it. Returns the
        other rows."""
        rank = torch.full((order.shape[0],), top, dtype=torch.long, device=order.device)
        rank[order[:top]] = torch.arange(top, device=order.device)
        step = max(1, sub.block_elements // (top + 1))
        rest = []
        for r0 in range(0, rows.shape[0], step):
            part = rows[r0 : r0 + step]
            outside = sub.best_outside(self.X[part], rank[self.index[part].long()])
            kept = outside < scores[part].min(dim=1).values
            rest.append(part[~kept])
            part, outside = part[kept], outside[kept]
            if top < up.shape[0]:
                outside = torch.maximum(outside, self.floor[part] + up[top])
            self.floor[part] = outside + slack[part]
            self.scores[part] = scores[part]
        return torch.cat(rest)

    def _rebase(self, rows, scores, index, unranked, up, top, slack) -> None:
        """New candidates of ``rows`` at the current heights from the cells scored for them
        (``scores``, ``index``: their candidates and the entering cells, exact, in increasing
        cell order; ``unranked``: a bound on the scored cells not listed, if any) and the
        bound on the cells not scored (the row's bound plus ``up[top]``, the largest increase
        among them)."""
        v, pos = scores.topk(self.width + 1, dim=1)
        floor = v[:, -1]
        if unranked is not None:
            floor = torch.maximum(floor, unranked)
        if top < up.shape[0]:
            floor = torch.maximum(floor, self.floor[rows] + up[top])
        self.floor[rows] = floor + slack[rows]  # the bound is computed: one more allowance
        v, i = _by_cell(v[:, :-1], index.gather(1, pos[:, :-1]))
        self.scores[rows], self.index[rows] = v, i.to(self.index.dtype)

    def _merge_fewest(self, scores: Tensor, delta: Tensor, slack: Tensor) -> int:
        """Free the reference that the fewest rows use by moving its rows to the current
        heights (their candidates' ``scores`` there; their bound grows by the largest rise of
        any cell since that reference); return it."""
        used = torch.bincount(self.reference, minlength=self.heights.shape[0])
        slot = int(used.argmin())
        rows = (self.reference == slot).nonzero().squeeze(1)
        self.scores[rows] = scores[rows]
        self.floor[rows] += delta[slot].amax() + slack[rows]
        return slot

    def _free_slot(self, cells: PowerCells, rows: Tensor) -> int:
        """:meth:`_slot` for ``rows``, or, when every reference is in use, the one that
        :meth:`_merge_fewest` frees (its rows moved to the heights of ``cells``)."""
        slot = self._slot(rows)
        if slot is None:
            delta, scores, _, _ = self._rescore(cells, 1)
            slot = self._merge_fewest(scores, delta, self._slack(cells))
        return slot

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
