"""The mapping methods compared: skot's three height models, POT exact and entropic, identity."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["METHODS", "FittedMap", "fit_method", "sinkhorn_reg"]

METHODS = (
    "skot-vector",
    "skot-network",
    "skot-residual",
    "skot-soft",
    "pot-emd",
    "pot-sinkhorn",
    "identity",
)


@dataclass
class FittedMap:
    """A fitted map, its fit time and what the method reports about itself."""

    method: str
    transform: Callable[[np.ndarray], np.ndarray]
    fit_seconds: float
    info: dict = field(default_factory=dict)


def sinkhorn_reg(
    X: np.ndarray, Y: np.ndarray, relative: float, target_weight: np.ndarray | None = None
) -> float:
    """``relative`` times the mean squared distance between source and target points (the
    target drawn with ``target_weight``, so a weighted cloud gives the same value as its
    rows repeated in proportion)."""
    rng = np.random.default_rng(0)
    xs = X[rng.integers(X.shape[0], size=min(1000, X.shape[0]))]
    if target_weight is None:
        ys = Y[rng.integers(Y.shape[0], size=min(1000, Y.shape[0]))]
    else:
        ys = Y[rng.choice(Y.shape[0], size=1000, p=target_weight)]
    return relative * float(((xs[:, None, :] - ys[None, :, :]) ** 2).sum(-1).mean())


def fit_method(
    method: str,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    seed: int = 0,
    skot_params: dict | None = None,
    sinkhorn_relative: float = 0.01,
    target_weight: np.ndarray | None = None,
) -> FittedMap:
    """Fit ``method`` from source samples ``X`` onto target points ``Y``.

    ``target_weight`` (summing to one) weights the rows of ``Y``; ``None`` means uniform.
    POT's classes get it through their ``distribution_estimation`` hook (source uniform).
    They map new points with their out-of-sample rules: ``EMDTransport`` moves a new point by
    the barycentric displacement of its nearest training point, and ``SinkhornTransport``
    uses its continuous entropic map. ``"skot-soft"`` is skot's entropic map (free heights)
    at Sinkhorn's temperature: POT's plan ``exp(-|x - y|^2 / reg_e)`` is a softmax of the
    scores ``<x, y> + h`` at ``reg_e / 2`` in the input's units, so
    ``epsilon = reg_e / (2 scale_**2)``; a one-step fit first reads skot's ``scale_``.
    """
    if method == "identity":
        return FittedMap(method, lambda Z: Z, 0.0)
    start = time.perf_counter()
    if method.startswith("skot-"):
        from skot import OTNetTransport

        params = dict(skot_params or {})
        height, info = method[5:], {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if height == "soft":
                height, reg = "vector", sinkhorn_reg(X, Y, sinkhorn_relative, target_weight)
                probe = OTNetTransport(height=height, max_iter=1)
                scale = probe.fit(X, X_target=Y, target_weight=target_weight).scale_
                params["epsilon"] = reg / (2 * scale**2)
                info["reg_e"] = reg
            est = OTNetTransport(height=height, random_state=seed, **params)
            est.fit(X, X_target=Y, target_weight=target_weight)
        info.update(n_iter=est.n_iter_, train_tv=est.marginal_error_, converged=est.converged_)
        return FittedMap(method, est.transform, time.perf_counter() - start, info)
    import ot

    def weights_of(Z: np.ndarray) -> np.ndarray:
        # POT calls this on the source and on the target array it was given.
        if target_weight is not None and Z is Y:
            return np.asarray(target_weight, dtype=np.float64)
        return np.full(Z.shape[0], 1.0 / Z.shape[0])

    if method == "pot-emd":
        est = ot.da.EMDTransport(max_iter=10**8, distribution_estimation=weights_of)
        info: dict = {}
    elif method == "pot-sinkhorn":
        reg = sinkhorn_reg(X, Y, sinkhorn_relative, target_weight)
        est = ot.da.SinkhornTransport(
            reg_e=reg, max_iter=1000, tol=1e-6, distribution_estimation=weights_of
        )
        info = {"reg_e": reg}
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(Xs=X, Xt=Y)
    return FittedMap(method, lambda Z: est.transform(Xs=Z), time.perf_counter() - start, info)
