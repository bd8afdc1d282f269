"""The default transport of :class:`~skot.da.OTNetAdapter` (``transport=None``).

Free heights and full-batch exact steps, with a tolerance just above the smallest marginal
error a hard map of the samples can reach, a step size set from the spacing of the target
points, and one retry with a larger step. The user guide (``docs/domain_adaptation.rst``,
"The default transport") gives the measurements behind each rule.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from .._transport import OTNetTransport

__all__: list[str] = []

#: Steps of a first try; a plain map's retry may take up to ``_RETRY_MAX_ITER``.
_MAX_ITER = 1000
_RETRY_MAX_ITER = 3000
#: Steps of a weighted map (no retry: it stalls above the rounding floor anyway).
_WEIGHTED_MAX_ITER = 300
#: Slack above the floor of the label-aware stage, of weighted maps and of a map that only
#: feeds the pseudo-labeller.
_COARSE_SLACK = 0.05


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


def _squared_spacing(X: np.ndarray, Y: np.ndarray, n_queries: int = 500) -> float:
    """Median squared distance from a target point to its nearest other target point, in
    the units where the transport standardises (one centre, one scale for both sides)."""
    centre = X.mean(axis=0)
    spread = ((X - centre) ** 2).sum(axis=1).mean() + ((Y - centre) ** 2).sum(axis=1).mean()
    scale2 = spread / (2 * X.shape[1])
    if not scale2 > 0:
        return 1.0
    rng = np.random.default_rng(0)
    queries = rng.permutation(Y.shape[0])[:n_queries]
    d2 = ((Y[queries, None, :] - Y[None, :, :]) ** 2).sum(axis=-1) if Y.shape[0] <= 4000 else None
    if d2 is None:
        d2 = np.stack([((Y - Y[q]) ** 2).sum(axis=1) for q in queries])
    d2[np.arange(len(queries)), queries] = np.inf
    nearest = d2.min(axis=1)
    nearest = nearest[np.isfinite(nearest) & (nearest > 0)]
    return float(np.median(nearest) / scale2) if nearest.size else 1.0


def _default_transport(
    Xs: np.ndarray, Xt: np.ndarray, slack: float = 5e-3, weights=None, step_factor: float = 1.0
) -> OTNetTransport:
    """The transport used when ``transport=None``: free heights, full-batch exact steps.

    - ``tol``: ``slack`` (or one sample, ``1.01 / n``, if larger) above the smallest marginal
      error a hard map of the samples onto the points can reach (:func:`_discreteness_floor`,
      ``weights`` as there).
    - the heights' step size: ``0.05 * step_factor`` times the squared spacing of the target
      points (:func:`_squared_spacing`), clipped to ``[0.01, 1]``: a height change of
      ``delta`` moves a cell wall by ``delta / spacing``.
    - at most 1000 steps; :func:`_fit_default` retries a fit that stops short of ``tol``.
    """
    floor = _discreteness_floor(Xs.shape[0], Xt.shape[0], weights)
    tol = max(slack, 1.01 / Xs.shape[0]) + floor
    params = {"height": "vector", "max_iter": _MAX_ITER, "tol": tol}
    if "height_learning_rate" in OTNetTransport().get_params():
        step = float(np.clip(0.05 * step_factor * _squared_spacing(Xs, Xt), 0.01, 1.0))
        params["height_learning_rate"] = step
    return OTNetTransport(**params)


def _fit_quietly(transport: OTNetTransport, Xs, Xt, fit_params) -> OTNetTransport:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return transport.fit(Xs, X_target=Xt, **fit_params)


def _fit_default(
    Xs: np.ndarray,
    Xt: np.ndarray,
    fit_params: dict,
    *,
    slack: float = 5e-3,
    floor_weights=None,
    step_factor: float = 1.0,
    warn: bool = True,
) -> OTNetTransport:
    """Fit the default transport of ``Xs`` onto ``Xt`` (``fit_params``: the weights).

    A weighted map (``floor_weights`` given) stops at ``_COARSE_SLACK`` above its floor or
    after 300 steps, without a retry. A plain map that stops short of its tolerance is fitted
    once more from scratch with a 3x larger step (up to 3000 steps when ``slack`` is below
    ``_COARSE_SLACK``, else 1000) and the better of the two is kept; ``warn``: a
    ``ConvergenceWarning`` when that one has not converged either (``warn=False``, for a map
    that only feeds the pseudo-labeller, also skips the retry).
    """
    weighted = floor_weights is not None
    if weighted:
        # Weighted hard maps stall 5-10% above the rounding floor of the cell counts.
        slack = max(slack, _COARSE_SLACK)
    transport = _default_transport(Xs, Xt, slack, floor_weights, step_factor)
    if weighted:
        transport.set_params(max_iter=_WEIGHTED_MAX_ITER)
    _fit_quietly(transport, Xs, Xt, fit_params)
    step = transport.get_params().get("height_learning_rate")
    if transport.converged_ or step is None or weighted or not warn:
        return transport
    # Adam on the piecewise-linear energy sometimes stalls a few points short of the
    # tolerance; a fresh start with a larger step usually gets through.
    retry = clone(transport).set_params(
        height_learning_rate=3 * step,
        max_iter=_RETRY_MAX_ITER if slack < _COARSE_SLACK else _MAX_ITER,
    )
    _fit_quietly(retry, Xs, Xt, fit_params)
    best = min(transport, retry, key=lambda t: t.marginal_error_)
    if not best.converged_:
        warnings.warn(
            f"OTNetAdapter's default transport stopped with marginal error "
            f"{best.marginal_error_:.4g} > tol={best.tol:.4g}; pass transport=OTNetTransport"
            "(...) with a larger max_iter or tol.",
            ConvergenceWarning,
            stacklevel=5,
        )
    return best
