"""Where the target rows come from: ``X_target`` or skada's stacked ``sample_domain``."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_array

__all__: list[str] = []


def _source_mask(sample_domain, n_rows: int, *, need_both: bool = False) -> np.ndarray:
    """Validate skada's ``sample_domain`` for ``n_rows`` rows; return the mask of the source
    rows (``>= 0``; target rows are ``< 0``). ``need_both``: both kinds must be present."""
    sd = check_array(sample_domain, ensure_2d=False, dtype=None, input_name="sample_domain")
    if sd.ndim != 1 or sd.shape[0] != n_rows:
        raise ValueError(
            f"sample_domain must be 1-dimensional with one entry per row of X ({n_rows}), "
            f"got shape {sd.shape}"
        )
    if not np.issubdtype(np.asarray(sd).dtype, np.number):
        raise TypeError(
            "sample_domain must hold integers (source rows >= 0, target rows < 0), got "
            f"values of dtype {np.asarray(sd).dtype}"
        )
    source = np.asarray(sd) >= 0
    if need_both and (not source.any() or source.all()):
        raise ValueError(
            "sample_domain must mark source rows (>= 0) and target rows (< 0); got "
            f"{int(source.sum())} source and {int((~source).sum())} target rows"
        )
    return source


def _split_domains(X, y, X_target, sample_domain):
    """Return ``(X_source, y_source, X_target, source_mask)`` from either convention
    (``source_mask`` is ``None`` with ``X_target``)."""
    if sample_domain is not None:
        if X_target is not None:
            raise ValueError(
                "Pass the target data either as X_target or stacked in X with sample_domain, "
                "not both"
            )
        source = _source_mask(sample_domain, X.shape[0], need_both=True)
        ys = None if y is None else _check_labels(y, X.shape[0])[source]
        return X[source], ys, X[~source], source
    if X_target is None:
        if y is not None:
            _check_labels(y, X.shape[0])  # a 2-D y: the target passed in POT's place
        raise ValueError(
            "OTNetAdapter needs unlabelled target data: pass X_target=... to fit (in a Pipeline "
            "or GridSearchCV, enable metadata routing with "
            "sklearn.set_config(enable_metadata_routing=True) and pass X_target to their fit), "
            "or stack source and target rows in X and pass sample_domain (skada's convention: "
            "source >= 0, target < 0)"
        )
    return X, (None if y is None else _check_labels(y, X.shape[0])), X_target, None


def _check_labels(y, n_rows: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(
            f"y has shape {y.shape}: y holds the source labels; pass the target rows as "
            "fit(X, y, X_target=X_target) (POT's fit(Xs, ys, Xt) order does not apply)"
        )
    if y.ndim != 1 or y.shape[0] != n_rows:
        raise ValueError(
            f"y must be 1-dimensional with one label per row of X ({n_rows}), got shape {y.shape}"
        )
    return y
