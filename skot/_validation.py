"""Input validation of the estimator layer: parameters, devices, weights, targets, the data's
numerical range and the atoms of the source (NumPy, no torch arithmetic).

Every check fails with a ``ValueError`` or ``TypeError`` that names the argument (``X``,
``X_target``, ``sample_weight``, ...) or the parameter, before any state changes.
"""

from __future__ import annotations

import hashlib
import math
import re
from numbers import Integral

import numpy as np
import torch
from sklearn.utils.validation import check_array, validate_data

from ._distributed import LOCAL
from .exceptions import DataRangeError

__all__ = [
    "MAX_STANDARDIZED",
    "check_fit_y",
    "check_hidden_layer_sizes",
    "check_target_feature_names",
    "check_range",
    "check_replicated",
    "marginal_error_floor",
    "resolve_device",
    "source_atoms",
    "standardization",
    "validate_X",
    "validate_distributed_inputs",
    "validate_fit_inputs",
]

_F64 = np.finfo(np.float64)
#: Largest absolute value of the standardised data, times ``sqrt(n_features)``: scores
#: ``<x', y'>``, heights (about ``|y'|^2``) and the energy then stay below ``1e30``, well inside
#: float32 (``3.4e38``).
MAX_STANDARDIZED = 1e15
#: Smallest variance of the standardisation: its square root and the heights in the input's
#: units (``scale_**2`` times the solver's) stay normal float64 numbers, at full precision.
_MIN_VARIANCE = _F64.tiny / _F64.eps
#: Rows per chunk of the passes below (no full-size temporary).
_CHUNK_ELEMENTS = 2**20


# ------------------------------------------------------------------ names in messages
def _names(message: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) is not None


def _named(exc: Exception, name: str) -> Exception:
    """``exc`` if its message names ``name``, else the same error with ``name: `` in front."""
    if _names(str(exc), name) or type(exc) not in (ValueError, TypeError):
        return exc
    return type(exc)(f"{name}: {exc}")


def _check_array_named(A, name: str, **kwargs) -> np.ndarray:
    try:
        return check_array(A, input_name=name, **kwargs)
    except (TypeError, ValueError) as exc:
        named = _named(exc, name)
        if named is exc:
            raise
        raise named from exc


def validate_X(estimator, X, *, reset: bool, **kwargs) -> np.ndarray:
    """``validate_data`` (float64 or float32), with ``X`` named in every error message."""
    try:
        return validate_data(estimator, X, reset=reset, dtype=[np.float64, np.float32], **kwargs)
    except (TypeError, ValueError) as exc:
        named = _named(exc, "X")
        if named is exc:
            raise
        raise named from exc


# ---------------------------------------------------------------------- parameters
def check_hidden_layer_sizes(sizes) -> tuple[int, ...]:
    """Validate ``hidden_layer_sizes`` (a sequence of positive ints, as scikit-learn's MLP)."""
    values = list(sizes) if isinstance(sizes, (tuple, list, np.ndarray)) else None
    if values is None or not all(
        isinstance(s, Integral) and not isinstance(s, (bool, np.bool_)) and s >= 1 for s in values
    ):
        raise ValueError(
            "hidden_layer_sizes must be a tuple of positive integers (the width of each "
            f"hidden layer of the height network, e.g. (256, 256)), got {sizes!r}"
        )
    return tuple(int(s) for s in values)


def _bad_device(device) -> str:
    return (
        f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r} (a torch.device "
        "of type 'cpu' or 'cuda' is accepted too)"
    )


def resolve_device(device) -> torch.device:
    """Turn the ``device`` parameter (a string or a ``torch.device``) into a ``torch.device``,
    failing clearly."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(_bad_device(device)) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type != "cpu":
        raise ValueError(_bad_device(device))
    return dev


def check_target_feature_names(estimator, X_target, name: str = "X_target") -> None:
    """Fail when ``X_target`` has column names that differ from the ones ``estimator`` was
    fitted with (``feature_names_in_``): columns are used by position, so a target with the
    same columns in another order would be silently mismatched."""
    from sklearn.utils.validation import _get_feature_names

    expected = getattr(estimator, "feature_names_in_", None)
    if expected is None:
        return
    got = _get_feature_names(X_target)
    if got is None or np.array_equal(got, expected):
        return
    if sorted(got.tolist()) == sorted(expected.tolist()):
        raise ValueError(
            f"{name} has the columns of X in another order ({list(got)[:5]}... against "
            f"{list(expected)[:5]}...): columns are matched by position; reorder them, e.g. "
            f"{name}[X.columns]"
        )
    missing = sorted(set(expected.tolist()) - set(got.tolist()), key=str)[:5]
    unexpected = sorted(set(got.tolist()) - set(expected.tolist()), key=str)[:5]
    raise ValueError(
        f"{name}'s feature names differ from X's: missing {missing}, unexpected {unexpected}"
    )


def check_fit_y(y) -> None:
    """Refuse a 2-D ``y`` in a transport's ``fit``: POT's habit ``fit(Xs, Xt)`` would pass
    the target as ``y``, which a transport ignores (it would fit the identity map)."""
    if y is None:
        return
    # Without converting y (scikit-learn's checks pass array-likes that refuse it).
    ndim = getattr(y, "ndim", None)
    if ndim is None and isinstance(y, list | tuple):
        ndim = np.ndim(y)
    if ndim == 2:
        shape = getattr(y, "shape", None) or np.shape(y)
        raise ValueError(
            f"OTNetTransport.fit got a 2-dimensional y of shape {shape}: the target points "
            "are passed as fit(X, X_target=Y), not fit(X, Y) (y is ignored)"
        )


# ------------------------------------------------------------------ weights, targets
def _check_weights(weights, n: int, name: str) -> np.ndarray:
    """Validate a weight vector of length ``n``; return it normalised to sum to one."""
    w = _check_array_named(weights, name, ensure_2d=False, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {w.shape}")
    if w.shape[0] != n:
        raise ValueError(f"{name} has {w.shape[0]} entries but {n} were expected")
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative, got a minimum of {w.min()}")
    top = w.max()
    if not top > 0:
        raise ValueError(f"{name} must not be all zero (sum of weights is {w.sum()})")
    # Divided by the largest first: huge weights must not overflow the sum, nor tiny ones
    # lose their precision.
    w = w / top
    return w / w.sum()


def _merge_duplicates(
    Y: np.ndarray, nu: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Merge identical target points (summing their weights): no power diagram can tell them
    apart, so they would otherwise never reach their masses. Also returns the row of ``Y``
    each merged point comes from (its first occurrence), or ``None`` when nothing merged."""
    uniq, inverse = np.unique(Y + 0.0, axis=0, return_inverse=True)  # + 0.0: -0.0 is 0.0
    if uniq.shape[0] == Y.shape[0]:
        return Y, nu, None
    # Keep the first-occurrence order of the points.
    first = np.full(uniq.shape[0], Y.shape[0])
    np.minimum.at(first, inverse.ravel(), np.arange(Y.shape[0]))
    order = np.argsort(first)
    merged = np.bincount(inverse.ravel(), weights=nu, minlength=uniq.shape[0])
    return uniq[order], merged[order], first[order]


def _check_target_ids(ids, m: int) -> np.ndarray:
    try:
        ids = np.asarray(ids)
        n_unique = np.unique(ids).shape[0] if ids.ndim == 1 else None
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"target_ids must be an array of comparable ids (numbers or strings): {exc}"
        ) from exc
    if ids.ndim != 1 or ids.shape[0] != m:
        raise ValueError(
            f"target_ids must be 1-dimensional with one id per row of X_target ({m}), got "
            f"shape {ids.shape}"
        )
    if n_unique != m:
        raise ValueError("target_ids must be unique")
    return ids


def validate_fit_inputs(
    estimator, X, X_target, sample_weight, target_weight, target_ids, reset, local=False
):
    """Validate what ``fit`` / ``partial_fit`` receive; return ``(X, mu, Y, nu, ids)``.

    ``mu`` and ``nu`` are normalised weights (``mu=None``: uniform), ``Y`` the target with
    identical points merged and zero-weight points dropped (``None`` when ``partial_fit``
    keeps the current target), ``ids`` the matching ``target_ids``. ``local=True``: ``X`` is
    already validated (one rank's rows, possibly none).
    """
    if not local:
        X = validate_X(estimator, X, reset=reset, ensure_min_samples=2)
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
        check_target_feature_names(estimator, X_target)
        Y = _check_array_named(X_target, "X_target", dtype=[np.float64, np.float32])
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
        if Y.shape[0] < 2:
            raise ValueError(
                "X_target must contain at least 2 distinct points with a positive "
                f"target_weight (a single target point makes the map constant); got {Y.shape[0]}"
            )
    return X, mu, Y, nu, ids


# -------------------------------------------------------------------- numerical range
def _max_abs(A: np.ndarray) -> float:
    return float(max(abs(A.max()), abs(A.min()))) if A.size else 0.0


def _chunks(A: np.ndarray):
    rows = max(1, _CHUNK_ELEMENTS // max(A.shape[1], 1))
    for r0 in range(0, A.shape[0], rows):
        yield r0, A[r0 : r0 + rows]


def _max_distance(A: np.ndarray, center: np.ndarray) -> float:
    """``max |A - center|`` over all entries (one chunked pass)."""
    return max(
        (float(np.abs(chunk.astype(np.float64) - center).max()) for _, chunk in _chunks(A)),
        default=0.0,
    )


def check_range(A: np.ndarray, center: np.ndarray, scale: float, name: str, fitted: bool) -> None:
    """Fail when the rows of ``A``, standardised as ``(A - center) / scale``, would overflow
    the solver's float32 scores (see :data:`MAX_STANDARDIZED`)."""
    limit = MAX_STANDARDIZED / math.sqrt(max(A.shape[1], 1))
    if not A.size:
        return
    bound = (_max_abs(A) + float(np.abs(center).max())) / scale
    if bound <= limit:
        return  # no pass over A needed
    far = _max_distance(A, center)
    if far / scale <= limit:
        return
    whose = "this fit's centre_ and scale_" if fitted else "the centre and spread of the data"
    raise DataRangeError(
        f"{name} has values up to {far:.3g} away from {whose} (scale {scale:.3g}), "
        f"{far / scale:.3g} times the scale: after the internal standardisation the solver's "
        "float32 scores <x, y> + h would overflow (float32 holds at most 3.4e+38). Rescale the "
        "data or remove the outlying rows (rows with a tiny or zero weight count too)."
    )


def _check_magnitude(X, Y) -> None:
    d = X.shape[1]
    # The centred values' squares, summed over the features, must stay finite (with room for
    # the heights in the input's units, about scale**2 times the solver's).
    limit = math.sqrt(_F64.max / (1e4 * d))
    for A, name in ((X, "X"), (Y, "X_target")):
        top = _max_abs(A)
        if top > limit:
            raise DataRangeError(
                f"{name} has values up to {top:.3g} in absolute value: the internal "
                "standardisation and the heights in the input's units need their squares, "
                f"which overflow float64 above about {limit:.3g} (with {d} features). Rescale "
                "the data (divide X and X_target by a common factor)."
            )


def _weighted_spread(A, weights, center) -> float:
    spread = 0.0
    for r0, chunk in _chunks(A):
        D = chunk.astype(np.float64) - center
        spread += float(weights[r0 : r0 + chunk.shape[0]] @ np.einsum("ij,ij->i", D, D))
    return spread


def standardization(X, mu, Y, nu, group=LOCAL) -> tuple[np.ndarray, float]:
    """Centre and scale of the internal standardisation ``x' = (x - center) / scale``, checked.

    One centre (the source mean) and one scale for source and target, from the mean squared
    distance to the centre, computed in float64 chunk by chunk (no ``n x d`` temporary, no
    cancellation). Raises :class:`~skot.exceptions.DataRangeError` when the values' squares
    overflow float64, when the spread's square underflows it, or when some rows lie so far out
    that their standardised scores overflow float32 (:func:`check_range`). With a distributed
    ``group`` (:mod:`._distributed`), ``X`` and ``mu`` are this rank's rows and their share of
    the union's weights, and the moments are the union's.
    """
    d = X.shape[1]
    _check_magnitude(X, Y)
    w = np.full(X.shape[0], 1.0 / X.shape[0]) if mu is None else mu
    center = np.zeros(d)
    for r0, chunk in _chunks(X):
        center += w[r0 : r0 + chunk.shape[0]] @ chunk.astype(np.float64)
    center = group.sum_array(center)
    spread = group.sum_float(_weighted_spread(X, w, center)) + _weighted_spread(Y, nu, center)
    variance = spread / (2 * d)
    if not variance >= _MIN_VARIANCE:
        far = max(_max_distance(X, center), _max_distance(Y, center))
        raise DataRangeError(
            f"X and X_target lie within {far:.3g} of their centre: the square of their spread "
            "underflows float64 (the internal standardisation divides by the spread, and the "
            "heights in the input's units are multiplied by its square). Rescale the data "
            "(multiply X and X_target by a common factor)."
        )
    scale = math.sqrt(variance)
    check_range(X, center, scale, "X", fitted=False)
    check_range(Y, center, scale, "X_target", fitted=False)
    return center, scale


def validate_distributed_inputs(
    estimator, group, X, X_target, sample_weight, target_weight, target_ids
):
    """:func:`validate_fit_inputs` and :func:`standardization` for a data-parallel fit.

    ``X`` and ``sample_weight`` are this rank's rows (possibly none); ``X_target``,
    ``target_weight`` and ``target_ids`` must be the same on every rank. Returns
    ``(X, mu, Y, nu, ids, center, scale)`` with ``mu`` this rank's share of the union's
    weights (summing to one over the ranks). Every rank checks its inputs and the ranks agree
    (``group.agree``) before each collective, so a bad input on one rank is an error on all
    of them, never a rank left waiting.
    """
    error = mu = Y = nu = ids = None
    try:
        if X_target is None:
            raise ValueError(
                "distributed=True needs X_target (the same on every rank): with X_target=None "
                "each rank would map its own rows onto themselves"
            )
        X = validate_X(estimator, X, reset=True, ensure_min_samples=0)
        _, _, Y, nu, ids = validate_fit_inputs(
            estimator, X[:0], X_target, None, target_weight, target_ids, reset=True, local=True
        )
        w = np.full(X.shape[0], 1.0)
        if sample_weight is not None:
            w = _check_array_named(
                sample_weight, "sample_weight", ensure_2d=False, dtype=np.float64
            )
            if w.ndim != 1 or w.shape[0] != X.shape[0]:
                raise ValueError(
                    f"sample_weight must have shape ({X.shape[0]},) (this rank's rows), got "
                    f"{w.shape}"
                )
            if (w < 0).any():
                raise ValueError(f"sample_weight must be non-negative, got a minimum of {w.min()}")
        _check_magnitude(X, Y)
    except Exception as exc:  # agreed on below: every rank raises
        error = exc
    group.agree(error)
    check_replicated(
        group,
        {
            "the number of features": np.array(X.shape[1]),
            "X_target": Y,
            "target_weight": nu,
            "target_ids": ids,
        },
        "with distributed=True every rank passes its own rows as X (and sample_weight) and the "
        "same target",
    )
    n_rows, total = group.sum_array(np.array([X.shape[0], float(w.sum())]))
    if n_rows < 2:
        raise ValueError(f"the ranks hold {int(n_rows)} source rows in all; at least 2 are needed")
    if not total > 0:
        raise ValueError("sample_weight must not be all zero over the ranks")
    mu = w / total
    try:
        center, scale = standardization(X, mu, Y, nu, group=group)
    except DataRangeError as exc:  # raised after the collectives: agreed on below
        error, center, scale = exc, None, None
    group.agree(error)
    return X, mu, Y, nu, ids, center, scale


def check_replicated(group, arrays: dict, why: str) -> None:
    """Fail on every rank unless every rank holds the same ``arrays`` (name: array or
    ``None``), saying which differ and ``why`` they must not."""
    prints = group.gather({k: None if a is None else _digest(a) for k, a in arrays.items()})
    for rank, p in enumerate(prints):
        differ = [k for k in arrays if p[k] != prints[0][k]]
        if differ:
            raise ValueError(f"ranks 0 and {rank} were given different {', '.join(differ)}: {why}")


def _digest(A) -> str:
    A = np.ascontiguousarray(A)
    return hashlib.sha1(str((A.dtype, A.shape)).encode() + A.tobytes()).hexdigest()


# ------------------------------------------------------------------ atoms of the source
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _row_hashes(X: np.ndarray) -> np.ndarray:
    """A 64-bit hash of every row's bits (``-0.0`` counts as ``0.0``), one pass, chunked."""
    bits = np.uint64 if X.dtype.itemsize == 8 else np.uint32
    mult = np.random.default_rng(0).integers(1, 2**63, size=X.shape[1], dtype=np.uint64)
    mult |= np.uint64(1)
    out = np.empty(X.shape[0], dtype=np.uint64)
    for r0, chunk in _chunks(X):
        b = (chunk + chunk.dtype.type(0)).view(bits).astype(np.uint64)
        b ^= b >> np.uint64(30)
        b *= _MIX1
        b ^= b >> np.uint64(27)
        b *= _MIX2
        b ^= b >> np.uint64(31)
        out[r0 : r0 + chunk.shape[0]] = (b * mult).sum(axis=1, dtype=np.uint64)
    return out


def _row_groups(X: np.ndarray) -> tuple[np.ndarray, int]:
    """The group of every row of ``X`` (identical rows share one) and the number of groups.

    Rows are grouped by a hash, in ``O(n d + n log n)``; the grouping is then checked row by
    row, and recomputed exactly with ``np.unique(axis=0)`` in the (unlikely) event of a
    collision."""
    _, first, inverse = np.unique(_row_hashes(X), return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    rep = first[inverse]
    for r0, chunk in _chunks(X):
        if not np.array_equal(chunk, X[rep[r0 : r0 + chunk.shape[0]]]):
            _, inverse = np.unique(X + X.dtype.type(0), axis=0, return_inverse=True)
            inverse = inverse.ravel()
            return inverse, int(inverse.max()) + 1
    return inverse, first.shape[0]


def source_atoms(X: np.ndarray, mu: np.ndarray | None) -> np.ndarray:
    """Masses of the distinct rows of ``X`` with a positive weight (the atoms of the
    empirical source), summing to one."""
    n = X.shape[0]
    w = np.full(n, 1.0 / n) if mu is None else np.asarray(mu, dtype=np.float64)
    inverse, k = _row_groups(X)
    masses = np.bincount(inverse, weights=w, minlength=k)
    masses = masses[masses > 0]
    return masses / masses.sum()


def _rounding_floor(atoms: np.ndarray, nu: np.ndarray) -> float:
    """Lower bound of the marginal error from the sums that sets of atoms can make.

    A cell's mass is a sum of whole atoms; a sum of ``r`` atoms lies between the sum of the
    ``r`` smallest and of the ``r`` largest, so every cell mass lies in the union of those
    intervals. A target weight in a gap of that union is missed, by at least ``up`` (to the
    gap's end) if its cell is heavier, ``down`` (to its start) if lighter. The excess over all
    cells equals the deficit (both are the marginal error), so the error is at least
    ``min over the cells' sides of max(sum of ups, sum of downs)``; this takes the smallest
    value of that balance with fractional sides (a linear programme, solved greedily).
    """
    a = np.sort(atoms)
    smallest = np.concatenate([[0.0], np.cumsum(a)])  # sum of the r smallest, r = 0..k
    largest = np.concatenate([[0.0], np.cumsum(a[::-1])])  # of the r largest
    # The sums' rounding errors (at most about k * eps) shrink every gap: no gap appears
    # from rounding alone, and the bound stays a bound.
    slack = 4 * _F64.eps * a.shape[0]
    gap = smallest[1:] - largest[:-1] > 2 * slack
    start, end = largest[:-1][gap] + slack, smallest[1:][gap] - slack  # the gaps, sorted
    if not start.size:
        return 0.0
    i = np.searchsorted(start, nu, side="left") - 1  # the last gap starting below nu_j
    ic = np.clip(i, 0, None)
    inside = (i >= 0) & (nu < end[ic])
    up = np.where(inside, end[ic] - nu, 0.0)
    down = np.where(inside, nu - start[ic], 0.0)
    # Start with every cell lighter (deficit sum(down)); make cells heavier in the order of
    # the cheapest excess per unit of deficit removed, until excess and deficit balance.
    move = down > 0
    up, down = up[move], down[move]
    order = np.argsort(up / down, kind="stable")
    up, down = up[order], down[order]
    excess = np.concatenate([[0.0], np.cumsum(up)])
    deficit = down.sum() - np.concatenate([[0.0], np.cumsum(down)])
    j = int(np.argmax(excess >= deficit))  # the first point where excess catches up
    if j == 0:
        return 0.0  # nothing missed
    # Between j - 1 and j: a fraction s of cell j - 1 turned heavier.
    s = (deficit[j - 1] - excess[j - 1]) / (up[j - 1] + down[j - 1])
    return float(excess[j - 1] + s * up[j - 1])


def marginal_error_floor(atoms: np.ndarray, nu: np.ndarray) -> float:
    """A lower bound of the marginal error of any hard map of a source with these ``atoms``
    (masses of its distinct rows, summing to one) onto targets of weights ``nu``.

    A hard map sends a whole atom to one cell. The bound is the largest of three:

    - with ``k`` atoms and ``m > k`` targets, at least ``m - k`` cells are empty: the sum of
      the ``m - k`` smallest target weights;
    - each atom heavier than the largest target weight overfills its cell by at least the
      difference: the sum of those differences;
    - cell masses are sums of whole atoms: :func:`_rounding_floor`.

    It is exact for a single atom (``1 - max(nu)``), for ``k <= m`` atoms each at least as
    heavy as every target weight (the first term), and for equal atoms onto equal target
    weights (rounding); it ignores which assignments a power diagram can realise, so it is a
    lower bound in general, never above the smallest reachable error.
    """
    a = np.asarray(atoms, dtype=np.float64)
    a = a[a > 0] / a.sum()
    nu = np.asarray(nu, dtype=np.float64)
    nu = nu / nu.sum()
    k, m = a.shape[0], nu.shape[0]
    order = np.sort(nu)
    empty = float(order[: m - k].sum()) if k < m else 0.0
    heavy = float(np.clip(a - order[-1], 0.0, None).sum())
    return max(empty, heavy, _rounding_floor(a, nu))
