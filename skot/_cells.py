"""The fitted power diagram of an :class:`~skot.OTNetTransport`, NumPy in and NumPy out.

These private methods are what :mod:`skot.da` and :mod:`skot.sampling` use to ask geometric
questions of a fitted map while staying free of torch; every score goes through
:class:`~._kernels.PowerCells`, on the estimator's device.
"""

from __future__ import annotations

import numpy as np
import torch

from ._kernels import PowerCells, score_rounding
from ._potentials import typical_spacing

__all__ = ["FittedCellsMixin", "median_spacing", "nearest_rows"]

_DTYPE = torch.float32
#: Largest rounding of a score, as a share of the temperature, for the soft passes of
#: :meth:`FittedCellsMixin._balanced_soft_sums` to run in float32: every soft weight is then
#: within 0.1% of its float64 value, the masses' total variation within half their ``tol``.
_SOFT_ROUNDING = 1e-3


def nearest_rows(A, B) -> np.ndarray:
    """Index of the nearest row of ``B`` for every row of ``A`` (Euclidean, float64, on the
    CPU; ties go to the lowest index)."""
    # copies: the inputs may be read-only or reversed views
    A = torch.tensor(np.ascontiguousarray(A, dtype=np.float64))
    B = torch.tensor(np.ascontiguousarray(B, dtype=np.float64))
    _, idx = PowerCells(B, -0.5 * (B**2).sum(dim=1)).assign(A)
    return idx.numpy()


def median_spacing(A, n_queries: int) -> float:
    """Median distance from a row of ``A`` to its nearest other row
    (:func:`~._potentials.typical_spacing` in float64, over at most ``n_queries`` rows drawn
    with a fixed seed; ``1.0`` when every row repeats another)."""
    A = torch.tensor(np.ascontiguousarray(A, dtype=np.float64))
    return typical_spacing(A, n_queries=n_queries, generator=torch.Generator().manual_seed(0))


class FittedCellsMixin:
    """Cell queries of a fitted transport (needs ``_target_t``, ``_heights_t``, ``scale_``,
    ``epsilon``, ``device_`` and ``_to_tensor``)."""

    def _cells(self, dtype=_DTYPE) -> PowerCells:
        """The fitted power diagram in standardised coordinates."""
        return PowerCells(self._target_t.to(dtype), self._heights_t.to(dtype))

    def _assign(self, X) -> np.ndarray:
        _, idx = self._cells().assign(self._to_tensor(X))
        return idx.cpu().numpy()

    def _nearest_target(self, X) -> np.ndarray:
        """Index of the nearest row of ``target_`` for every row of ``X`` (Euclidean); no
        pass when ``X`` holds the target points themselves, in order (they are distinct)."""
        X = np.asarray(X)
        if X.shape == self.target_.shape and np.array_equal(X, self.target_):
            return np.arange(X.shape[0])
        Y = self._target_t
        _, idx = PowerCells(Y, -0.5 * (Y**2).sum(dim=1)).assign(self._to_tensor(X))
        return idx.cpu().numpy()

    def _top_cells(self, X, k) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best cells of every row of ``X`` and their scores, in the input's units
        up to a constant per row (so score gaps are exact): ``<x, target_j> + heights_j``."""
        vals, idx = self._cells(torch.float64).top_k(self._to_tensor(X).double(), k)
        return vals.double().cpu().numpy() * self.scale_**2, idx.cpu().numpy()

    def _scores_at(self, X, index) -> np.ndarray:
        """Scores of the rows of ``X`` for the cells ``index`` (shape ``(n, k)``), in the units
        of :meth:`_top_cells`."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long, device=self.device_)
        vals = self._cells(torch.float64).scores_at(self._to_tensor(X).double(), index)
        return vals.double().cpu().numpy() * self.scale_**2

    def _cell_sums(self, X, values) -> np.ndarray:
        """Sum over the rows of ``X`` of their ``values`` (shape ``(n, p)``) in each cell:
        hard cells, or the softmax memberships of the entropic map when ``epsilon > 0``."""
        V = torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device_)
        Xt = self._to_tensor(X).double()
        w = Xt.new_ones(Xt.shape[0])
        sums = self._cells(torch.float64).cell_sums(Xt, w, V, epsilon=self.epsilon).sums
        return sums.cpu().numpy()

    def _balanced_soft_sums(self, X, values, temperature, *, max_rounds=20, tol=1e-3):
        """Sums over the equal-weight rows of ``X`` of their ``values`` (shape ``(n, p)``) in
        each cell of the entropic map at ``temperature`` (in the units of :meth:`_top_cells`'
        scores) whose soft cell masses match the target weights: from the fitted heights,
        Sinkhorn's scaling ``h_j -= eps log(mass_j / nu_j)`` until the masses are within
        ``tol`` (total variation) or ``max_rounds`` passes. Returns the sums (weights
        ``1 / n``).

        The passes run in float32 where its scores' rounding is below
        :data:`_SOFT_ROUNDING` of the temperature (high dimension), else in float64. The
        first pass sums only the masses: the fitted hard map's heights never balance the
        soft masses, and one correction nearly always does."""
        eps = temperature / self.scale_**2
        Xt, Y, h = self._to_tensor(X), self._target_t, self._heights_t
        dtype = torch.float32
        if score_rounding(Xt, Y, h, torch.float32) > _SOFT_ROUNDING * eps:
            dtype = torch.float64
        Xt, Y, h = Xt.to(dtype), Y.to(dtype), h.to(dtype, copy=True)
        V = torch.as_tensor(np.asarray(values), dtype=dtype, device=self.device_)
        w = Xt.new_full((Xt.shape[0],), 1.0 / Xt.shape[0])
        nu = self._nu_t.to(dtype)
        for r in range(max_rounds):
            with_values = r > 0 or max_rounds == 1
            cells = PowerCells(Y, h).cell_sums(Xt, w, V if with_values else None, epsilon=eps)
            balanced = 0.5 * float((cells.masses.double() - nu.double()).abs().sum()) <= tol
            if balanced and with_values:
                break
            if not balanced:
                h -= eps * torch.log(cells.masses.clamp_min(torch.finfo(dtype).tiny) / nu)
        return cells.sums.double().cpu().numpy()

    def _cell_entries(self, X, cells) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``cells``, whether a row of ``X`` lies in it (as :meth:`predict_index`
        assigns them) and, for those none lies in, the row of ``X`` closest to entering it
        (``-1`` for the others): one pass over every cell, then one over the empty ones."""
        cells = np.asarray(cells, dtype=np.int64)
        diagram = self._cells()
        Xt = self._to_tensor(X)
        top, index = diagram.assign(Xt)
        occupied = np.zeros(diagram.n_cells, dtype=bool)
        occupied[index.cpu().numpy()] = True
        inside = occupied[cells]
        rows = np.full(cells.shape[0], -1, dtype=np.int64)
        empty, where = np.unique(cells[~inside], return_inverse=True)
        if empty.size:
            empty_t = torch.as_tensor(empty, device=self.device_)
            _, closest = diagram.closest_to_enter(Xt, empty_t, top=top)
            rows[~inside] = closest.cpu().numpy()[where]
        return inside, rows

    def _closest_to_enter(self, X, cells) -> np.ndarray:
        """For each cell of ``cells``, the row of ``X`` closest to entering it."""
        cells = torch.as_tensor(np.asarray(cells), dtype=torch.long, device=self.device_)
        _, rows = self._cells(torch.float64).closest_to_enter(self._to_tensor(X).double(), cells)
        return rows.cpu().numpy()
