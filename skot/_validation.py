"""Input validation of the estimator layer: devices, weights, targets (NumPy, no torch
arithmetic)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_array, validate_data

__all__ = ["resolve_device", "validate_fit_inputs"]


def resolve_device(device: str) -> torch.device:
    """Turn the ``device`` parameter into a ``torch.device``, failing clearly."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def _check_weights(weights, n: int, name: str) -> np.ndarray:
    """Validate a weight vector of length ``n``; return it normalised to sum to one."""
    w = check_array(weights, ensure_2d=False, dtype=np.float64, input_name=name)
    if w.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {w.shape}")
    if w.shape[0] != n:
        raise ValueError(f"{name} has {w.shape[0]} entries but {n} were expected")
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative, got a minimum of {w.min()}")
    total = w.sum()
    if not total > 0:
        raise ValueError(f"{name} must not be all zero (sum of weights is {total})")
    return w / total


def _merge_duplicates(
    Y: np.ndarray, nu: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Merge identical target points (summing their weights): no power diagram can tell them
    apart, so they would otherwise never reach their masses. Also returns the row of ``Y``
    each merged point comes from (its first occurrence), or ``None`` when nothing merged."""
    uniq, inverse = np.unique(Y, axis=0, return_inverse=True)
    if uniq.shape[0] == Y.shape[0]:
        return Y, nu, None
    # Keep the first-occurrence order of the points.
    first = np.full(uniq.shape[0], Y.shape[0])
    np.minimum.at(first, inverse.ravel(), np.arange(Y.shape[0]))
    order = np.argsort(first)
    merged = np.bincount(inverse.ravel(), weights=nu, minlength=uniq.shape[0])
    return uniq[order], merged[order], first[order]


def _check_target_ids(ids, m: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != m:
        raise ValueError(
            f"target_ids must be 1-dimensional with one id per row of X_target ({m}), got "
            f"shape {ids.shape}"
        )
    if np.unique(ids).shape[0] != m:
        raise ValueError("target_ids must be unique")
    return ids


def validate_fit_inputs(estimator, X, X_target, sample_weight, target_weight, target_ids, reset):
    """Validate what ``fit`` / ``partial_fit`` receive; return ``(X, mu, Y, nu, ids)``.

    ``mu`` and ``nu`` are normalised weights (``mu=None``: uniform), ``Y`` the target with
    identical points merged and zero-weight points dropped (``None`` when ``partial_fit``
    keeps the current target), ``ids`` the matching ``target_ids``.
    """
    X = validate_data(
        estimator, X, reset=reset, dtype=[np.float64, np.float32], ensure_min_samples=2
    )
    n = X.shape[0]
    mu = None if sample_weight is None else _check_weights(sample_weight, n, "sample_weight")
    if X_target is None:
        if reset or not hasattr(estimator, "target_"):
            Y = X
            nu = mu if target_weight is None else _check_weights(target_weight, n, "target_weight")
            nu = np.full(n, 1.0 / n) if nu is None else nu
        else:
            Y, nu = None, None
    else:
        try:
            Y = check_array(X_target, dtype=[np.float64, np.float32], input_name="X_target")
        except (TypeError, ValueError) as exc:
            if "X_target" in str(exc):
                raise
            raise type(exc)(f"X_target: {exc}") from exc
        if Y.shape[1] != X.shape[1]:
            raise ValueError(f"X_target has {Y.shape[1]} features, but X has {X.shape[1]} features")
        m = Y.shape[0]
        nu = (
            np.full(m, 1.0 / m)
            if target_weight is None
            else _check_weights(target_weight, m, "target_weight")
        )
    ids = None
    if Y is not None and target_ids is not None:
        ids = _check_target_ids(target_ids, Y.shape[0])
    if Y is not None:
        Y, nu, rows = _merge_duplicates(np.asarray(Y, dtype=np.float64), nu)
        if ids is not None and rows is not None:
            ids = ids[rows]
        if Y.shape[0] < 2:
            raise ValueError(
                "X_target must contain at least 2 distinct points (a single target point "
                "makes the map constant); got 1"
            )
        keep = nu > 0
        if not keep.all():
            Y, nu = Y[keep], nu[keep]
            ids = None if ids is None else ids[keep]
    return X, mu, Y, nu, ids
