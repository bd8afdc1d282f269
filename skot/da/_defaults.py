"""The default transport of :class:`~skot.da.OTNetAdapter` (``transport=None``).

Up to :data:`EXACT_MAX_PAIRS` source-target pairs (fewer from :data:`NEWTON_MIN_FEATURES`
features on, :func:`exact_by_default`) the adapter couples the two samples exactly
(``skot._discrete``); beyond, and where no exact solver applies, it fits the semi-discrete map
with free heights and Newton steps, to a tolerance just above the smallest marginal error a
hard map of the samples can reach. The user guide (``docs/domain_adaptation.rst``, "The
default transport") gives the measurements behind each rule.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .._transport import OTNetTransport

__all__: list[str] = []

#: Largest ``n_source * n_target`` coupled exactly by default: beyond it Newton steps on the
#: semi-discrete map take less time than ``ot.emd`` in any dimension (the user guide's table).
EXACT_MAX_PAIRS = 5000 * 5000
#: From this many features on, Newton steps overtake ``ot.emd`` at fewer pairs (the simplex's
#: time hardly depends on the dimension, a pass's grows with it)...
NEWTON_MIN_FEATURES = 8
#: ...: beyond ``(EXACT_SIDE * max(1, d / EXACT_SIDE_FEATURES))**2`` pairs. Measured crossings
#: of the adapter's fits at n = m, one thread: 1,000 to 1,500 rows at d = 8 and 64, 1,000 to
#: 2,000 at d = 256, 2,000 to 3,000 at d = 1,000 (where the Gaussian start's
#: eigendecompositions and each pass cost more).
EXACT_SIDE = 1200
EXACT_SIDE_FEATURES = 500
#: Newton steps of the default map (n = m = 20,000, d = 2 takes about 110).
_MAX_ITER = 500
#: Slack of the default map's marginal error above its floor (1%: within it the transport
#: cost is within 0.1% of the exact coupling's at n = m).
_SLACK = 0.01
#: Slack above the floor of the label-aware stage, of weighted maps and of a map that only
#: feeds the pseudo-labeller.
_COARSE_SLACK = 0.05


def exact_by_default(n_source: int, n_target: int, n_features: int) -> bool:
    """Whether the default transport couples samples of these sizes and dimension exactly (if
    it can): where ``ot.emd`` is measured faster than Newton steps on the semi-discrete map."""
    pairs = n_source * n_target
    if pairs > EXACT_MAX_PAIRS:
        return False
    if n_features < NEWTON_MIN_FEATURES:
        return True
    side = EXACT_SIDE * max(1.0, n_features / EXACT_SIDE_FEATURES)
    return pairs <= side * side


def _discreteness_floor(n_samples: int, n_targets: int, weights=None) -> float:
    """Smallest marginal error of a hard map from ``n_samples`` samples onto ``n_targets``
    points: every cell holds whole samples.

    ``weights=None``: equal-weight samples and points. ``weights=("targets", nu)``: equal-weight
    samples onto points of weights ``nu`` (the best counts round ``n_samples * nu`` by largest
    remainders). ``weights=("samples", mu)``: samples of weights ``mu`` onto equal-weight
    points; the value is that of a greedy packing (heaviest sample into the emptiest cell),
    an achievable error, not always the smallest.
    """
    if weights is None:
        low = n_samples // n_targets
        extra = n_samples - low * n_targets  # cells holding low + 1 samples
        return 0.5 * (
            extra * abs((low + 1) / n_samples - 1 / n_targets)
            + (n_targets - extra) * abs(low / n_samples - 1 / n_targets)
        )
    side, w = weights
    w = np.asarray(w, dtype=np.float64) / np.sum(w)
    if side == "targets":
        ideal = n_samples * w
        counts = np.floor(ideal)
        short = int(n_samples - counts.sum())
        counts[np.argsort(counts - ideal)[:short]] += 1
        return 0.5 * float(np.abs(counts / n_samples - w).sum())
    cells = np.zeros(n_targets)
    for value in np.sort(w)[::-1]:
        cells[np.argmin(cells)] += value
    return 0.5 * float(np.abs(cells - 1 / n_targets).sum())


def _default_transport(
    Xs: np.ndarray, Xt: np.ndarray, slack: float = _SLACK, weights=None
) -> OTNetTransport:
    """The semi-discrete transport used when ``transport=None``: free heights, Newton steps,
    ``tol`` at ``slack`` (or one sample, ``1.01 / n``, if larger) above the smallest marginal
    error a hard map of the samples onto the points can reach (:func:`_discreteness_floor`,
    ``weights`` as there)."""
    floor = _discreteness_floor(Xs.shape[0], Xt.shape[0], weights)
    tol = max(slack, 1.01 / Xs.shape[0]) + floor
    return OTNetTransport(height="vector", solver="newton", max_iter=_MAX_ITER, tol=tol)


def _fit_default(
    Xs: np.ndarray,
    Xt: np.ndarray,
    fit_params: dict,
    *,
    slack: float = _SLACK,
    floor_weights=None,
    warn: bool = True,
) -> OTNetTransport:
    """Fit the default transport of ``Xs`` onto ``Xt`` (``fit_params``: the weights).

    A weighted map (``floor_weights`` given) stops at ``_COARSE_SLACK`` above its floor (the
    floor of weighted rows is that of a greedy packing, not always reachable). ``warn``: one
    ``ConvergenceWarning`` if the map stops short of its tolerance (``False`` for a map that
    only feeds the pseudo-labeller).
    """
    if floor_weights is not None:
        slack = max(slack, _COARSE_SLACK)
    transport = _default_transport(Xs, Xt, slack, floor_weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        transport.fit(Xs, X_target=Xt, **fit_params)
    if warn and not transport.converged_:
        warnings.warn(
            f"OTNetAdapter's default transport stopped with marginal error "
            f"{transport.marginal_error_:.4g} > tol={transport.tol:.4g}; pass transport="
            "OTNetTransport(...) with a larger max_iter or tol.",
            ConvergenceWarning,
            stacklevel=5,
        )
    return transport
