"""Atoms of an empirical source (repeated rows), which no hard map can split: the warning up
front, the advice when a fit stops above ``tol``, and the early stop at their floor."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from ._validation import marginal_error_floor, source_atoms
from .exceptions import AtomicSourceWarning

__all__ = ["SourceAtoms", "StopAtFloor"]


class SourceAtoms(NamedTuple):
    """The atoms of an empirical source: distinct rows with a positive weight."""

    n_distinct: int
    n_rows: int  # rows with a positive weight
    floor: float  # lower bound of the marginal error of any hard map
    largest: float  # mass of the heaviest atom

    @classmethod
    def of(cls, X, mu, nu) -> SourceAtoms:
        """See :func:`._validation.source_atoms` and :func:`._validation.marginal_error_floor`."""
        masses = source_atoms(X, mu)
        n_rows = X.shape[0] if mu is None else int(np.count_nonzero(mu))
        return cls(masses.shape[0], n_rows, marginal_error_floor(masses, nu), float(masses.max()))

    @property
    def repeated(self) -> bool:
        return self.n_distinct < self.n_rows

    @property
    def rows(self) -> str:
        return "1 distinct row" if self.n_distinct == 1 else f"{self.n_distinct} distinct rows"

    def warn(self, tol: float, n_targets: int) -> None:
        """The warning up front when no hard map can reach ``tol``."""
        warnings.warn(
            f"X has {self.rows} (with a positive weight; the largest weighs "
            f"{self.largest:.3g}) for {n_targets} target points: a hard map sends "
            "all copies of a row to one target point, so no map can get the marginal error "
            f"below {self.floor:.3g} > tol={tol}. Smooth the source with bandwidth > 0 "
            "(in standardised units, e.g. bandwidth=0.1), or set tol above "
            f"{self.floor:.3g}; the fit stops early if it reaches that floor.",
            AtomicSourceWarning,
            stacklevel=4,
        )

    def advice(self, tol: float) -> str | None:
        """What to say when a fit stopped above ``tol`` (``None``: the atoms are not why)."""
        if self.floor > tol:
            return (
                f"X has {self.rows}, and no hard map gets the marginal error below "
                f"{self.floor:.3g} (all copies of a row go to one target point), so more "
                "iterations cannot reach tol: smooth the source with bandwidth > 0, or set "
                f"tol above {self.floor:.3g}."
            )
        if self.repeated:
            return (
                f"X has {self.rows} among {self.n_rows} rows: all copies of a row go to one "
                "target point, which may keep the marginal error above tol whatever "
                "max_iter (no floor above tol is proven here; the lower bound is "
                f"{self.floor:.3g}). Smooth the source with bandwidth > 0, or raise tol."
            )
        return None


class StopAtFloor:
    """Stop a fit whose exact marginal error has reached the floor of its source's atoms
    (no hard map gets below it, so further steps cannot help). Within float32 rounding of the
    weights: ``1e-6``."""

    def __init__(self, floor: float):
        self.floor = floor

    def __call__(self, estimator, record) -> bool:
        return bool(record.exact and record.error <= self.floor + 1e-6)
