"""The fitted power diagram of an :class:`~skot.OTNetTransport`, NumPy in and NumPy out.

These private methods are what :mod:`skot.da` and :mod:`skot.sampling` use to ask geometric
questions of a fitted map while staying free of torch; every score goes through
:class:`~._kernels.PowerCells`, on the estimator's device.
"""

from __future__ import annotations

import numpy as np
import torch

from ._kernels import PowerCells

__all__ = ["FittedCellsMixin", "nearest_rows"]

_DTYPE = torch.float32


def nearest_rows(A, B) -> np.ndarray:
    """Index of the nearest row of ``B`` for every row of ``A`` (Euclidean, float64, on the
    CPU; ties go to the lowest index)."""
    A = torch.tensor(np.asarray(A, dtype=np.float64))  # a copy: the input may be read-only
    B = torch.tensor(np.asarray(B, dtype=np.float64))
    _, idx = PowerCells(B, -0.5 * (B**2).sum(dim=1)).assign(A)
    return idx.numpy()


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
        """Index of the nearest row of ``target_`` for every row of ``X`` (Euclidean)."""
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
        ``1 / n``)."""
        eps = temperature / self.scale_**2
        Xt = self._to_tensor(X).double()
        V = torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device_)
        w = Xt.new_full((Xt.shape[0],), 1.0 / Xt.shape[0])
        Y, nu = self._target_t.double(), self._nu_t.double()
        h = self._heights_t.double().clone()
        for _ in range(max_rounds):
            cells = PowerCells(Y, h).cell_sums(Xt, w, V, epsilon=eps)
            if 0.5 * float((cells.masses - nu).abs().sum()) <= tol:
                break
            h -= eps * torch.log(cells.masses.clamp_min(1e-300) / nu)
        return cells.sums.cpu().numpy()

    def _closest_to_enter(self, X, cells) -> np.ndarray:
        """For each cell of ``cells``, the row of ``X`` closest to entering it."""
        cells = torch.as_tensor(np.asarray(cells), dtype=torch.long, device=self.device_)
        _, rows = self._cells(torch.float64).closest_to_enter(self._to_tensor(X).double(), cells)
        return rows.cpu().numpy()
