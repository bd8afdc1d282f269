"""The errors and warnings skot raises, in one place.

- :class:`DataRangeError` (a ``ValueError``): the data's magnitude or spread cannot be
  represented in the arithmetic the map needs (squares in float64, scores in float32).
- :class:`DivergenceError` (a ``ValueError``): training produced a non-finite energy or
  non-finite heights; the last finite state is kept.
- :class:`DistributedError` (a ``RuntimeError``): a data-parallel fit
  (``distributed=True``) failed on another rank, or a collective operation failed or timed
  out; every rank raises it instead of waiting.
- :class:`AtomicSourceWarning` (a :class:`~sklearn.exceptions.ConvergenceWarning`, so a
  ``UserWarning``): the source has atoms (repeated rows, or rows with large weights) that no
  hard map can split, so the marginal error cannot reach ``tol``.
- scikit-learn's :class:`~sklearn.exceptions.ConvergenceWarning` (the fit stopped above
  ``tol``) and :class:`~sklearn.exceptions.NotFittedError`, re-exported for convenience.

Every other bad input or parameter is a plain ``ValueError`` or ``TypeError`` that names the
argument. See the user guide's "Reliability" page.
"""

from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning, NotFittedError

from ._distributed import DistributedError
from ._solver import DivergenceError

__all__ = [
    "AtomicSourceWarning",
    "ConvergenceWarning",
    "DataRangeError",
    "DistributedError",
    "DivergenceError",
    "NotFittedError",
]


class DataRangeError(ValueError):
    """The data's magnitude or spread is out of the range the map can represent.

    Raised when values are so large that their squares overflow float64 (about ``1.3e154``),
    when the spread is so small that its square underflows, or when some rows lie so far from
    the others (relative to the data's spread) that their scores overflow float32 after the
    internal standardisation. Rescale the data (or drop the outlying rows).
    """


class AtomicSourceWarning(ConvergenceWarning):
    """The source has atoms, so no hard map can reach ``tol``.

    A hard map sends every copy of a repeated row (an atom of the source distribution) to the
    same target point: the mass of an atom cannot be split between cells. When the smallest
    marginal error any such map reaches (a lower bound computed from the atoms' masses and the
    target weights) exceeds ``tol``, :meth:`~skot.OTNetTransport.fit` warns up front. Smooth the
    source with ``bandwidth > 0``, or use a ``tol`` above the floor.
    """
