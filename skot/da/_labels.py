"""Label transfer: source labels carried to the target points through a fitted map."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted

from .._validation import _check_array_named

__all__ = ["label_proportions", "transfer_labels"]


def label_proportions(transport, X_source, y_source):
    """Class proportions of the source mass that a fitted map sends to each target point.

    The map ``transport`` (fitted from ``X_source`` onto its ``target_``) puts every source
    row in the cell of one target point, so target point ``j`` receives the labels of the
    source rows of its cell: row ``j`` of the result is their (weighted) class histogram,
    normalised. With ``transport.epsilon > 0`` the memberships are soft (the softmax of the
    entropic map), as in POT's ``transform_labels``. A target point whose cell is empty takes
    the label of the source row closest to entering it (largest ``<x, y_j> + h_j - u(x)``).

    Parameters
    ----------
    transport : OTNetTransport
        Fitted on ``X_source`` (``X_target`` being the target points).
    X_source : array-like of shape (n_source, n_features)
        The source rows the map was fitted on (or a fresh sample of the same distribution).
    y_source : array-like of shape (n_source,)
        Their labels.

    Returns
    -------
    proportions : ndarray of shape (n_targets, n_classes)
        Rows sum to one; row ``j`` belongs to ``transport.target_[j]``.
    classes : ndarray of shape (n_classes,)
        The class of each column.

    Examples
    --------
    >>> import numpy as np
    >>> from skot import OTNetTransport
    >>> from skot.da import label_proportions
    >>> Xs = np.array([[0.0], [0.1], [5.0], [5.1]]); ys = np.array(["a", "a", "b", "b"])
    >>> Xt = np.array([[0.5], [6.0]])
    >>> ot = OTNetTransport(height="vector", random_state=0).fit(Xs, X_target=Xt)
    >>> proportions, classes = label_proportions(ot, Xs, ys)
    >>> classes
    array(['a', 'b'], dtype='<U1')
    >>> proportions
    array([[1., 0.],
           [0., 1.]])
    """
    check_is_fitted(transport)
    Xs = check_array(X_source, dtype=np.float64, input_name="X_source")
    ys = np.asarray(y_source)
    if ys.ndim != 1 or ys.shape[0] != Xs.shape[0]:
        raise ValueError(
            f"y_source must be 1-dimensional with one label per row of X_source "
            f"({Xs.shape[0]}), got shape {ys.shape}"
        )
    check_classification_targets(ys)
    encoder = LabelEncoder().fit(ys)
    codes = encoder.transform(ys)
    n_classes = len(encoder.classes_)
    # Class histogram of every cell: sums of one-hot codes (soft memberships if epsilon > 0).
    counts = transport._cell_sums(Xs, np.eye(n_classes)[codes])
    totals = counts.sum(axis=1, keepdims=True)
    empty = np.flatnonzero(totals[:, 0] <= 0)
    proportions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    if empty.size:
        proportions[empty, codes[transport._closest_to_enter(Xs, empty)]] = 1.0
    return proportions, encoder.classes_


def transfer_labels(transport, X_source, y_source, X_target=None, *, return_proportions=False):
    """Labels of target points carried through a fitted map from the labelled source.

    The majority class of each target point's cell (see :func:`label_proportions`), without
    training any classifier. This is the label-propagation use of optimal transport (POT's
    ``transform_labels``): exact when the source classes are separated and the map keeps them
    apart.

    Parameters
    ----------
    transport : OTNetTransport
        Fitted on ``X_source``.
    X_source : array-like of shape (n_source, n_features)
        The source rows the map was fitted on.
    y_source : array-like of shape (n_source,)
        Their labels.
    X_target : array-like of shape (n_target, n_features), default=None
        Rows to label, each taking the label of its nearest point of ``transport.target_``
        (its own for the target points themselves). ``None`` labels ``transport.target_``.
    return_proportions : bool, default=False
        Also return the class proportions of those rows and the classes.

    Returns
    -------
    labels : ndarray of shape (n_target,)
        Transferred labels.
    proportions : ndarray of shape (n_target, n_classes)
        Only with ``return_proportions=True``.
    classes : ndarray of shape (n_classes,)
        Only with ``return_proportions=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from skot import OTNetTransport
    >>> from skot.da import transfer_labels
    >>> Xs = np.array([[0.0, 0.0], [0.2, 0.0], [3.0, 3.0], [3.2, 3.0]])
    >>> ys = np.array([0, 0, 1, 1])
    >>> Xt = Xs + [10.0, 0.0]
    >>> ot = OTNetTransport(height="vector", random_state=0).fit(Xs, X_target=Xt)
    >>> transfer_labels(ot, Xs, ys, Xt)
    array([0, 0, 1, 1])
    """
    proportions, classes = label_proportions(transport, X_source, y_source)
    if X_target is not None:
        Xt = _check_array_named(X_target, "X_target", dtype=np.float64)
        if Xt.shape[1] != transport.target_.shape[1]:
            raise ValueError(
                f"X_target has {Xt.shape[1]} features, but the transport has "
                f"{transport.target_.shape[1]}"
            )
        proportions = proportions[transport._nearest_target(Xt)]
    labels = classes[proportions.argmax(axis=1)]
    if return_proportions:
        return labels, proportions, classes
    return labels
