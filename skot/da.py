"""Domain adaptation with OT-Net: sklearn pipelines, label transfer and model selection.

A classifier trained on a labelled *source* domain often fails on an unlabelled *target*
domain whose features are shifted. Optimal transport fixes the shift by moving the source
samples onto the target distribution before the classifier learns from them. This module holds
the glue that makes that one ordinary scikit-learn object:

- :class:`OTNetAdapter`: the transformer of ``scaler -> adapter -> classifier`` pipelines. Its
  ``fit_transform`` returns the *transported* source (what the classifier is trained on) and its
  ``transform`` lets (target) data through unchanged at predict time. Target data arrive by
  metadata routing (``X_target``) or stacked with the source in skada's ``sample_domain``
  convention.
- :func:`label_proportions` and :func:`transfer_labels`: source labels carried to the target
  points through the map (hard cells, or soft memberships when ``epsilon > 0``).
- :class:`ReverseValidationScorer`: a score without target labels that ``GridSearchCV`` can
  maximise to choose OT-Net hyperparameters.

skada is optional: nothing here imports it.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    OneToOneFeatureMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metadata_routing import MetadataRequest
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._transport import OTNetTransport

__all__ = [
    "OTNetAdapter",
    "ReverseValidationScorer",
    "label_proportions",
    "transfer_labels",
]

# Rows are processed in blocks of this many matrix entries (memory stays bounded).
_BLOCK = 2**22


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

    Domain-adaptation problems have a few thousand points on each side, where the free height
    vector converges fastest (the network pays off for reuse on changed targets). The
    tolerance is 0.5% (or one sample) above the smallest marginal error that a hard map of
    the samples onto the points can reach (zero for equal weights when the number of targets
    divides the number of samples; ``weights`` as in :func:`_discreteness_floor`). The
    heights' step size follows the squared spacing of the target points (a height change of
    ``delta`` moves a cell wall by ``delta / spacing``): measured, fixed step sizes that
    converge in 64 dimensions oscillate in 2, and the other way round. ``slack`` is the
    allowance above the floor (``0.05`` for the label-aware stage). At most 1000 steps: a fit
    that has not converged by then is retried with a larger step (see ``_fit_map``).
    ``step_factor`` multiplies the step (3 for the label-aware stage: measured on the rotated
    digits, its first try with the plain rule stalled on two seeds of three, and 3x converged
    on all three in 280-350 steps).
    """
    # One misplaced sample changes the error by 1/n: allow at least that much.
    floor = _discreteness_floor(Xs.shape[0], Xt.shape[0], weights)
    tol = max(slack, 1.01 / Xs.shape[0]) + floor
    params = {"height": "vector", "max_iter": 1000, "tol": tol}
    if "height_learning_rate" in OTNetTransport().get_params():
        step = float(np.clip(0.05 * step_factor * _squared_spacing(Xs, Xt), 0.01, 1.0))
        params["height_learning_rate"] = step
    return OTNetTransport(**params)


def _estimate_proportions(
    Xs: np.ndarray,
    codes: np.ndarray,
    Xt: np.ndarray,
    n_classes: int,
    *,
    n_rounds: int = 40,
    steps_per_round: int = 30,
    step_size: float = 1.0,
) -> np.ndarray:
    """Class proportions of the target: the mixture of source classes closest to it.

    Minimises over the class proportions ``pi`` (and a location-scale map ``x -> s x + t``
    of the source) the transport cost between the source, its class ``k`` reweighted to total
    mass ``pi_k``, and the target. This is the estimate of JCPOT (Redko et al., 2019) with the
    location-scale conditional shift of Zhang et al. (2013): without ``s, t``, any shift of
    the whole target is mistaken for a change of class proportions (measured on skada's
    conditional shift, the estimate then collapses onto one class).

    The transport runs from the target samples (moved by the inverse of ``s, t``) onto the
    source points, warm-started between rounds. The derivative of the transport cost with
    respect to the weight of source point ``i`` is its dual potential
    ``|x_i|^2 / 2 + heights_i``; the proportions take an exponentiated-gradient step on the
    class means of it (normalised to a largest log-change of ``step_size / sqrt(1 + round)``),
    ``s, t`` are refitted by weighted least squares to the points' images (cell barycentres),
    and the estimate is the mean of the proportions over the second half of the rounds.
    Measured: with a fixed, unnormalised step and 10 solver steps per round the heights lag
    behind the weights and the proportions swing between 0.01 and 0.9 (two blobs, true share
    0.2); 40 rounds of 30 steps land within 0.03 of the truth on the two-blob problems of the
    tests, on skada's conditional shift (5 seeds) and on 4 of 5 seeds of its target shift
    (0.11 off on the fifth).
    """
    n_k = np.bincount(codes, minlength=n_classes).astype(np.float64)
    present = n_k > 0
    pi = n_k / n_k.sum()
    mean_s, mean_t = Xs.mean(axis=0), Xt.mean(axis=0)
    spread_s = float(np.sqrt(((Xs - mean_s) ** 2).sum(axis=1).mean())) or 1.0
    spread_t = float(np.sqrt(((Xt - mean_t) ** 2).sum(axis=1).mean())) or 1.0
    scale, shift = spread_t / spread_s, mean_t - spread_t / spread_s * mean_s
    transport = None
    history = []
    for rnd in range(n_rounds):
        nu = pi[codes] / n_k[codes]
        samples = (Xt - shift) / scale
        if transport is None:
            transport = _default_transport(samples, Xs, weights=("targets", nu))
            # Rough heights suffice: the proportions move anyway.
            transport.set_params(random_state=0, max_iter=5 * steps_per_round)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            transport.fit(samples, X_target=Xs, target_weight=nu)
        transport.set_params(warm_start=True, max_iter=steps_per_round)
        # Identical source rows are merged into one target point: index them back.
        rows = _nearest_rows(Xs, np.asarray(transport.target_, dtype=np.float64))
        potential = 0.5 * (Xs**2).sum(axis=1) + transport.heights_[rows]
        gradient = np.bincount(codes, weights=potential, minlength=n_classes)[present]
        gradient = gradient / n_k[present]
        centred = gradient - gradient.mean()
        step = np.exp(-step_size / np.sqrt(1 + rnd) * centred / max(np.abs(centred).max(), 1e-12))
        pi[present] = np.maximum(pi[present] * step, 1e-3)
        pi /= pi.sum()
        history.append(pi.copy())
        # Location-scale refit: regress the images s * b_i + t of the source points on them.
        images = scale * np.asarray(transport.barycenters_, dtype=np.float64)[rows] + shift
        w = nu / nu.sum()
        xm, zm = w @ Xs, w @ images
        var = float(w @ ((Xs - xm) ** 2).sum(axis=1))
        if var > 0:
            scale = max(float(w @ ((Xs - xm) * (images - zm)).sum(axis=1)) / var, 1e-3)
            shift = zm - scale * xm
    estimate = np.mean(history[len(history) // 2 :], axis=0)
    return estimate / estimate.sum()


def _split_domains(X, y, X_target, sample_domain):
    """Return ``(X_source, y_source, X_target, source_mask)`` from either convention."""
    if sample_domain is not None:
        if X_target is not None:
            raise ValueError(
                "Pass the target data either as X_target or stacked in X with sample_domain, "
                "not both"
            )
        sd = check_array(sample_domain, ensure_2d=False, dtype=None, input_name="sample_domain")
        if sd.ndim != 1 or sd.shape[0] != X.shape[0]:
            raise ValueError(
                f"sample_domain must be 1-dimensional with one entry per row of X "
                f"({X.shape[0]}), got shape {sd.shape}"
            )
        source = np.asarray(sd) >= 0
        if not source.any() or source.all():
            raise ValueError(
                "sample_domain must mark source rows (>= 0) and target rows (< 0); got "
                f"{int(source.sum())} source and {int((~source).sum())} target rows"
            )
        ys = None if y is None else np.asarray(y)[source]
        return X[source], ys, X[~source], source
    if X_target is None:
        raise ValueError(
            "OTNetAdapter needs unlabelled target data: pass X_target=... to fit (in a Pipeline "
            "or GridSearchCV, enable metadata routing with "
            "sklearn.set_config(enable_metadata_routing=True) and pass X_target to their fit), "
            "or stack source and target rows in X and pass sample_domain (skada's convention: "
            "source >= 0, target < 0)"
        )
    return X, (None if y is None else np.asarray(y)), X_target, None


def _nearest_rows(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``B`` for every row of ``A`` (Euclidean), in blocks."""
    half_norm = 0.5 * (B * B).sum(axis=1)
    out = np.empty(A.shape[0], dtype=np.intp)
    rows = max(1, _BLOCK // max(B.shape[0], 1))
    for r0 in range(0, A.shape[0], rows):
        out[r0 : r0 + rows] = np.argmax(A[r0 : r0 + rows] @ B.T - half_norm, axis=1)
    return out


def _closest_to_enter(samples: np.ndarray, Y: np.ndarray, heights, cells) -> np.ndarray:
    """For each power cell in ``cells``, the index of the sample closest to entering it:
    the largest ``<z, y_i> + h_i - max_j (<z, y_j> + h_j)`` (in blocks of rows)."""
    H = np.asarray(heights, dtype=np.float64)
    best = np.full(len(cells), -np.inf)
    arg = np.zeros(len(cells), dtype=np.intp)
    block = max(1, _BLOCK // max(Y.shape[0], 1))
    for r0 in range(0, samples.shape[0], block):
        scores = samples[r0 : r0 + block] @ Y.T + H
        gap = scores[:, cells] - scores.max(axis=1, keepdims=True)
        top = gap.argmax(axis=0)
        value = gap[top, np.arange(len(cells))]
        better = value > best
        best[better] = value[better]
        arg[better] = r0 + top[better]
    return arg


def _label_scale(Xs: np.ndarray) -> float:
    """Root mean squared distance of the source to its mean: the unit of ``label_weight``."""
    spread = float(np.sqrt(((Xs - Xs.mean(axis=0)) ** 2).sum(axis=1).mean()))
    return spread if spread > 0 else 1.0


class OTNetAdapter(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Transport a labelled source domain onto an unlabelled target domain with OT-Net.

    The transformer of a ``scaler -> OTNetAdapter -> classifier`` pipeline. Fitting it needs
    source rows ``X`` (labelled, the labels going to the classifier) and unlabelled target rows,
    given either as ``X_target`` (routed to ``fit`` by scikit-learn's metadata routing, through
    the earlier steps of a ``Pipeline(..., transform_input=["X_target"])``) or stacked in ``X``
    with ``sample_domain`` (skada's convention: source rows ``>= 0``, target rows ``< 0``).

    - ``fit_transform`` returns the source rows *transported* onto the target domain (stacked
      inputs: source rows transported, target rows unchanged). A pipeline calls it while
      fitting, so the classifier learns from the transported source.
    - ``transform`` returns its input unchanged: at predict time the rows are target data, which
      already live in the target domain. With ``sample_domain``, rows marked as source
      (``>= 0``) are transported (out of sample) and target rows pass through.

    So ``fit(X).transform(X)`` differs from ``fit_transform(X)`` on purpose, as for
    :class:`sklearn.preprocessing.TargetEncoder`.

    Parameters
    ----------
    transport : OTNetTransport, default=None
        The (unfitted) transport, cloned at fit. ``None`` uses ``OTNetTransport(height="vector",
        max_iter=1000)`` with a step size for the free heights set from the spacing of the target
        points and ``tol`` 0.5% (or one sample) above the smallest marginal error a hard map
        between the two sample sizes can reach; a fit that stops short of ``tol`` is retried
        once with a 3x larger step (up to 3000 steps) and the better map is kept. Its
        parameters are reachable by grid search as ``<step>__transport__<name>``.
    direction : {"forward", "barycentric"}, default="forward"
        ``"forward"`` learns the map from the source samples onto the target points: each
        source row moves to one target point (``transport.epsilon > 0``: a softmax-weighted
        mean of target points). ``"barycentric"`` learns the map from the target samples onto
        the source points and moves every source row to the mean of the target samples of its
        cell (its barycentric image), which averages several target points when the target is
        larger than the source. With as many (uniformly weighted) source as target rows both
        give the same optimal matching.
    label_weight : float, default=0.0
        Class-aware transport. ``0`` ignores the labels. ``> 0`` appends
        ``label_weight * s * onehot(y)`` to the source rows and ``label_weight * s * q`` to
        the target rows, where ``s`` is the root mean squared distance of the source to its
        mean and ``q`` are target class probabilities (pseudo-labels): moving a point of class
        ``k`` onto a target believed to be of class ``l != k`` then costs about
        ``label_weight**2`` times a typical squared distance more, so cells stop mixing source
        classes. With the default transport this label-aware map stops at a marginal error of
        5%, which leaves some of the mass that would have to cross a label gap in its class;
        it does not change the mass each class carries (see ``class_proportions``).
    label_estimator : classifier, default=None
        Classifier that gives the target pseudo-labels ``q``: fitted on the transported source
        and its labels, then ``predict_proba`` on the target. ``None`` uses
        ``KNeighborsClassifier(n_neighbors=10)``. Used only when ``label_weight > 0``.
    n_label_iter : int, default=1
        Class-aware rounds (``label_weight > 0``): each re-estimates the pseudo-labels from the
        previous map and fits the label-aware map again.
    class_proportions : {"source", "estimate"} or dict, default="source"
        Share of the transported mass that each source class carries, that is the class
        proportions assumed for the target (needs ``y``). ``"source"``: the source's own
        proportions (every source row weighs the same), the assumption of POT's and skada's
        mappings. When the target's class proportions differ (a *target shift*), an
        equal-weight map must move the excess mass of some class into another class's region.
        ``"estimate"``: the proportions that bring the class-reweighted source closest to the
        target in transport cost, allowing for a location-scale shift of the whole target (see
        Notes); source rows of class ``k`` then weigh ``pi_k / n_k``. A dict ``{class:
        proportion}`` gives known proportions (positive, normalised here). With unequal
        weights the default transport stops 5% above the rounding floor of the cell counts, or
        after 300 steps, without a retry; ``direction="barycentric"`` suits weighted source
        rows best (measured).
    strength : float in [0, 1], default=1.0
        How far the source rows move towards their images: a source row ``x`` with image
        ``T(x)`` becomes ``x + strength * (T(x) - x)``. ``1`` is the full transport, ``0`` no
        adaptation (every source row is returned unchanged, so the pipeline is the plain
        ``scaler -> classifier`` one; the map is still fitted, and ``transport_`` and
        ``class_proportions_`` are set). Applies to ``fit_transform``, to source rows in
        :meth:`transform` and :meth:`transform_source`, and so to the rows the classifier
        learns from; the map itself (``transport_``, label transfer, the class-aware
        pseudo-labels) is the full one. A label-free scorer in ``GridSearchCV`` can choose
        between ``0`` and ``1``, that is whether to adapt (under a covariate or target shift
        the right amount of transport is often none); measured, it ranks intermediate
        values badly (see the user guide).

    Attributes
    ----------
    transport_ : OTNetTransport
        The fitted transport (in augmented coordinates when ``label_weight > 0``).
    X_source_ : ndarray of shape (n_source, n_features)
        The training source rows (used to map new source rows out of sample).
    X_source_transported_ : ndarray of shape (n_source, n_features)
        Their images in the target domain (moved by ``strength`` of the way).
    X_target_ : ndarray of shape (n_target, n_features)
        The training target rows, as this step received them.
    class_proportions_ : ndarray of shape (n_classes,) or None
        Class proportions the map used (order of ``classes_``; the source's own with
        ``class_proportions="source"``; ``None`` without ``y``).
    target_proba_ : ndarray of shape (n_target, n_classes) or None
        Target pseudo-label probabilities of the last class-aware round (``None`` when
        ``label_weight == 0``).
    classes_ : ndarray of shape (n_classes,) or None
        Source classes seen (``None`` when ``y`` was not given).
    n_features_in_ : int
        Number of features seen during ``fit``.

    See Also
    --------
    skot.OTNetTransport : the transport itself.
    transfer_labels : labels of the target points through the map, without a classifier.

    Notes
    -----
    In a cross-validation (``cross_val_score``, ``GridSearchCV``), scikit-learn splits every
    routed array that has as many rows as ``X``: an ``X_target`` of the same length as the
    source is sub-sampled per fold (and one of another length is passed whole). Use different
    lengths, or skada's stacked convention, when every fold must see the whole target.
    The held-out rows are source rows: the default score of a pipeline then measures the
    classifier on *untransported* source rows, not the target accuracy; use
    :class:`ReverseValidationScorer` (or skada's scorers with ``sample_domain``) instead.

    ``class_proportions="estimate"`` minimises, over the class proportions ``pi`` and a map
    ``x -> s x + t`` of the source, the transport cost between the class-reweighted source and
    the target (the estimate of JCPOT, Redko et al. 2019, with the location-scale shift of
    Zhang et al. 2013). It assumes that the classes differ between the domains only by that
    common shift and their proportions: right for skada's target and conditional shifts,
    wrong for the rotated digits, where it moved the proportions away from the true ones and
    lowered the accuracy (measured in the user guide). It costs about 300 extra solver steps.

    Examples
    --------
    >>> import numpy as np
    >>> import sklearn
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from skot.da import OTNetAdapter
    >>> rng = np.random.default_rng(0)
    >>> Xs = rng.normal(size=(200, 2)); ys = (Xs[:, 0] > 0).astype(int)
    >>> Xt = rng.normal(size=(100, 2)) + [4.0, 1.0]          # shifted target, no labels
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     pipe = make_pipeline(StandardScaler(with_std=False), OTNetAdapter(),
    ...                          KNeighborsClassifier(), transform_input=["X_target"])
    ...     pipe = pipe.fit(Xs, ys, X_target=Xt)
    ...     accuracy = pipe.score(Xt, (Xt[:, 0] > 4.0).astype(int))
    >>> bool(accuracy > 0.9)
    True
    """

    __metadata_request__fit = {"X_target": True, "sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}

    _parameter_constraints: dict = {
        "transport": [HasMethods(["fit", "transform", "inverse_transform"]), None],
        "direction": [StrOptions({"forward", "barycentric"})],
        "label_weight": [Interval(Real, 0, None, closed="left")],
        "label_estimator": [HasMethods(["fit", "predict_proba"]), None],
        "n_label_iter": [Interval(Integral, 1, None, closed="left")],
        "class_proportions": [StrOptions({"source", "estimate"}), dict],
        "strength": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(
        self,
        transport=None,
        *,
        direction="forward",
        label_weight=0.0,
        label_estimator=None,
        n_label_iter=1,
        class_proportions="source",
        strength=1.0,
    ):
        self.transport = transport
        self.direction = direction
        self.label_weight = label_weight
        self.label_estimator = label_estimator
        self.n_label_iter = n_label_iter
        self.class_proportions = class_proportions
        self.strength = strength

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, *, X_target=None, sample_domain=None):
        """Learn the map of the source rows onto the target domain.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source rows, or source and target rows stacked (with ``sample_domain``).
        y : array-like of shape (n_samples,), default=None
            Source labels (entries of target rows are ignored). Needed when
            ``label_weight > 0``.
        X_target : array-like of shape (n_target, n_features), default=None
            Unlabelled target rows. Requested by metadata routing by default.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of each row of ``X``: source ``>= 0``, target ``< 0``.

        Returns
        -------
        self : OTNetAdapter
            The fitted adapter.
        """
        self._fit(X, y, X_target, sample_domain)
        return self

    def fit_transform(self, X, y=None, *, X_target=None, sample_domain=None):
        """Fit, then return the source rows transported onto the target domain.

        Parameters
        ----------
        X, y, X_target, sample_domain
            As in :meth:`fit`.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features)
            The transported source rows; with ``sample_domain``, target rows are unchanged.
        """
        X, source = self._fit(X, y, X_target, sample_domain)
        if source is None:
            return self.X_source_transported_.astype(X.dtype, copy=False)
        out = X.copy()
        out[source] = self.X_source_transported_
        return out

    @_fit_context(prefer_skip_nested_validation=False)
    def _fit(self, X, y, X_target, sample_domain):
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        if X_target is not None:
            X_target = check_array(X_target, dtype=[np.float64, np.float32], input_name="X_target")
            if X_target.shape[1] != X.shape[1]:
                raise ValueError(
                    f"X_target has {X_target.shape[1]} features, but X has {X.shape[1]} features"
                )
        Xs, ys, Xt, source = _split_domains(X, y, X_target, sample_domain)
        if Xt.shape[0] < 2:
            raise ValueError(f"X_target must have at least 2 rows, got {Xt.shape[0]}")
        Xs64, Xt64 = np.asarray(Xs, dtype=np.float64), np.asarray(Xt, dtype=np.float64)
        self.classes_ = None
        codes = None
        if ys is not None:
            check_classification_targets(ys)
            encoder = LabelEncoder().fit(ys)
            self.classes_ = encoder.classes_
            codes = encoder.transform(ys)
        if self.label_weight > 0 and codes is None:
            raise ValueError(
                f"label_weight={self.label_weight} needs the source labels y; got y=None"
            )
        self.X_source_ = Xs64
        self.X_target_ = Xt64
        self.target_proba_ = None
        weights = self._class_weights(Xs64, codes, Xt64)
        # With label_weight > 0 this first map only feeds the pseudo-labeller: stopping it at
        # 5% (as the label-aware stage) halved its cost on the rotated digits.
        first_slack = 0.05 if self.label_weight > 0 else 5e-3
        self.transport_ = self._fit_map(
            Xs64, Xt64, slack=first_slack, weights=weights, warn=self.label_weight == 0
        )
        moved = self._training_images(Xs64, Xt64)
        if self.label_weight > 0:
            n_classes = len(self.classes_)
            onehot = np.eye(n_classes)[codes]
            scale = self.label_weight * _label_scale(Xs64)
            for _ in range(self.n_label_iter):
                proba = self._pseudo_labels(moved, codes, Xt64, n_classes)
                self.target_proba_ = proba
                As = np.hstack([Xs64, scale * onehot])
                At = np.hstack([Xt64, scale * proba])
                # Measured on the rotated digits: the label-aware problem converges slowly
                # (source and target class proportions differ, so some mass must cross a
                # label gap), and stopping at 5% leaves that mass in its class, which helps.
                self.transport_ = self._fit_map(
                    As, At, slack=0.05, weights=weights, step_factor=3.0
                )
                moved = self._training_images(As, At)[:, : Xs64.shape[1]]
        self.X_source_transported_ = self._blend(Xs64, moved)
        return X, source

    def _blend(self, rows, images):
        """``rows + strength * (images - rows)``; exactly ``rows`` (a copy) at strength 0 and
        exactly ``images`` at strength 1."""
        if self.strength == 1:
            return images
        if self.strength == 0:
            return np.array(rows, dtype=np.float64, copy=True)
        return rows + self.strength * (images - rows)

    def _class_weights(self, Xs, codes, Xt):
        """Source row weights giving each class its target proportion (``None``: uniform)."""
        self.class_proportions_ = None
        if codes is None:
            if self.class_proportions != "source":
                raise ValueError(
                    f"class_proportions={self.class_proportions!r} needs the source labels y; "
                    "got y=None"
                )
            return None
        n_classes = len(self.classes_)
        n_k = np.bincount(codes, minlength=n_classes).astype(np.float64)
        if isinstance(self.class_proportions, dict):
            unknown = set(self.class_proportions) - set(self.classes_.tolist())
            missing = set(self.classes_.tolist()) - set(self.class_proportions)
            if unknown or missing:
                raise ValueError(
                    "class_proportions must give one proportion per source class "
                    f"{self.classes_.tolist()}; unknown keys {sorted(unknown, key=str)}, "
                    f"missing {sorted(missing, key=str)}"
                )
            pi = np.array([self.class_proportions[c] for c in self.classes_.tolist()], float)
            if not (np.all(np.isfinite(pi)) and np.all(pi > 0)):
                raise ValueError(
                    f"class_proportions must be finite and > 0, got {self.class_proportions}"
                )
            pi = pi / pi.sum()
        elif self.class_proportions == "estimate":
            pi = _estimate_proportions(Xs, codes, Xt, n_classes)
        else:
            self.class_proportions_ = n_k / n_k.sum()
            return None
        self.class_proportions_ = pi
        return pi[codes] / n_k[codes]

    def _fit_map(self, Xs, Xt, slack=5e-3, weights=None, step_factor=1.0, warn=True):
        """Fit the map of ``Xs`` (rows weighted by ``weights``, uniform if ``None``) onto
        ``Xt`` in the adapter's direction; ``warn``: a ``ConvergenceWarning`` when the
        default transport stops short of its tolerance."""
        kwargs, floor_weights = {}, None
        if weights is not None:
            side = "sample_weight" if self.direction == "forward" else "target_weight"
            kwargs[side] = weights
            floor_weights = ("samples" if self.direction == "forward" else "targets", weights)
            # Measured on skada's shifted datasets: with unequal class weights the hard map
            # stalls 5-10% above the rounding floor of the cell counts (1000 steps did not get
            # further than 300, and the accuracies were the same), so stop there.
            slack = max(slack, 0.05)
        if self.direction == "barycentric":
            Xs, Xt = Xt, Xs
        if self.transport is not None:
            return clone(self.transport).fit(Xs, X_target=Xt, **kwargs)
        transport = _default_transport(Xs, Xt, slack, floor_weights, step_factor)
        if weights is not None:
            transport.set_params(max_iter=300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            transport.fit(Xs, X_target=Xt, **kwargs)
        step = transport.get_params().get("height_learning_rate")
        # No retry for weighted maps (they stall above the floor anyway) nor for a map that
        # only feeds the pseudo-labeller (warn=False).
        if transport.converged_ or step is None or weights is not None or not warn:
            return transport
        # Adam on the piecewise-linear energy sometimes stalls a few points short of the
        # tolerance (a step of 0.01 on skada's covariate shift: 0.056 after 3000 steps); a
        # fresh start with a 3x larger step usually gets through (there: in 600 steps).
        # Keep the better of the two.
        # The first try stops at 1000 steps; a plain map's retry may take up to 3000.
        retry = clone(transport).set_params(
            height_learning_rate=3 * step, max_iter=3000 if slack < 0.05 else 1000
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            retry.fit(Xs, X_target=Xt, **kwargs)
        best = min(transport, retry, key=lambda t: t.marginal_error_)
        if not best.converged_:
            warnings.warn(
                f"OTNetAdapter's default transport stopped with marginal error "
                f"{best.marginal_error_:.4g} > tol={best.tol:.4g}; pass transport=OTNetTransport"
                "(...) with a larger max_iter or tol.",
                ConvergenceWarning,
                stacklevel=4,
            )
        return best

    def _training_images(self, rows, samples):
        """Images of the training source rows ``rows`` (in the transport's coordinates);
        ``samples`` are the target rows the barycentric direction was fitted on."""
        if self.direction == "forward":
            return np.asarray(self.transport_.transform(rows), dtype=np.float64)
        # inverse_transform matches each row to its own target point (a source point here)
        # and returns the mean of the target samples of its cell.
        images = np.asarray(self.transport_.inverse_transform(rows), dtype=np.float64)
        Y = np.asarray(self.transport_.target_, dtype=np.float64)
        occupied = np.zeros(Y.shape[0], dtype=bool)
        occupied[self.transport_.predict_index(samples)] = True
        own = _nearest_rows(rows, Y)
        empty = ~occupied[own]
        if empty.any():
            # An empty cell's barycentre would be the source row itself (not transported):
            # take the target sample closest to entering the cell instead (largest
            # <z, y_i> + h_i - u(z)), as label_proportions does for labels.
            images[empty] = samples[
                _closest_to_enter(samples, Y, self.transport_.heights_, own[empty])
            ]
        return images

    def _pseudo_labels(self, moved, codes, Xt, n_classes):
        est = (
            KNeighborsClassifier(n_neighbors=10)
            if self.label_estimator is None
            else clone(self.label_estimator)
        )
        est.fit(moved, codes)
        proba = np.zeros((Xt.shape[0], n_classes))
        proba[:, np.asarray(est.classes_, dtype=int)] = est.predict_proba(Xt)
        return proba

    # ---------------------------------------------------------------- mapping
    def transform(self, X, sample_domain=None):
        """Let target rows through; transport rows marked as source.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to map. Without ``sample_domain`` they are taken as target rows and returned
            unchanged.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of each row: rows ``>= 0`` are source rows, moved by
            :meth:`transform_source`; rows ``< 0`` pass through.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features)
            ``X`` with its source rows transported.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if sample_domain is None:
            return X
        sd = check_array(sample_domain, ensure_2d=False, dtype=None, input_name="sample_domain")
        if sd.ndim != 1 or sd.shape[0] != X.shape[0]:
            raise ValueError(
                f"sample_domain must have one entry per row of X ({X.shape[0]}), "
                f"got shape {sd.shape}"
            )
        source = np.asarray(sd) >= 0
        out = X.copy()
        if source.any():
            out[source] = self.transform_source(X[source])
        return out

    def transform_source(self, X):
        """Transport source rows, including rows not seen in ``fit``.

        Training rows get their fitted images. Other rows: with ``direction="forward"`` and no
        labels in the cost, the map itself (``transport_.transform``); otherwise the
        displacement of the nearest training source row is applied (the usual out-of-sample
        rule of barycentric mappings). Either way a row moves by ``strength`` of its
        displacement (not at all with ``strength=0``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source rows.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features)
            Their images in the target domain, in the dtype of ``X``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        X64 = np.asarray(X, dtype=np.float64)
        near = _nearest_rows(X64, self.X_source_)
        exact = np.all(self.X_source_[near] == X64, axis=1)
        out = X64 + (self.X_source_transported_[near] - self.X_source_[near])
        if self.direction == "forward" and self.label_weight == 0 and not exact.all():
            new = X64[~exact]
            out[~exact] = self._blend(new, np.asarray(self.transport_.transform(new), np.float64))
        out[exact] = self.X_source_transported_[near[exact]]
        return out.astype(X.dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.target_tags.required = False
        return tags


# ------------------------------------------------------------------ label transfer
def _temperature(transport: OTNetTransport) -> float:
    """Softmax temperature of an entropic transport in the input's units.

    Scores ``<x, y_j> + heights_j`` in input units are ``scale**2`` times the solver's
    standardised scores (up to a per-row constant), where ``epsilon`` is defined.
    """
    return transport.epsilon * transport.scale_**2


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
    Y = np.asarray(transport.target_, dtype=np.float64)
    h = np.asarray(transport.heights_, dtype=np.float64)
    m = Y.shape[0]
    counts = np.zeros((m, n_classes))
    rows = max(1, _BLOCK // m)
    best_gap = np.full(m, -np.inf)
    best_code = np.zeros(m, dtype=int)
    tau = _temperature(transport) if transport.epsilon > 0 else 0.0
    for r0 in range(0, Xs.shape[0], rows):
        scores = Xs[r0 : r0 + rows] @ Y.T + h
        top = scores.max(axis=1, keepdims=True)
        block_codes = codes[r0 : r0 + rows]
        if tau > 0:
            member = np.exp((scores - top) / tau)
            member /= member.sum(axis=1, keepdims=True)
        else:
            member = np.zeros_like(scores)
            member[np.arange(scores.shape[0]), scores.argmax(axis=1)] = 1.0
        np.add.at(counts.T, block_codes, member)
        gap = scores - top  # <= 0; 0 for the cell that holds the row
        best = gap.argmax(axis=0)
        better = gap[best, np.arange(m)] > best_gap
        best_gap[better] = gap[best, np.arange(m)][better]
        best_code[better] = block_codes[best[better]]
    totals = counts.sum(axis=1, keepdims=True)
    empty = totals[:, 0] <= 0
    proportions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    proportions[empty, best_code[empty]] = 1.0
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
        Xt = check_array(X_target, dtype=np.float64, input_name="X_target")
        if Xt.shape[1] != transport.target_.shape[1]:
            raise ValueError(
                f"X_target has {Xt.shape[1]} features, but the transport has "
                f"{transport.target_.shape[1]}"
            )
        proportions = proportions[_nearest_rows(Xt, np.asarray(transport.target_, np.float64))]
    labels = classes[proportions.argmax(axis=1)]
    if return_proportions:
        return labels, proportions, classes
    return labels


# ------------------------------------------------------------------ model selection
def _unwrap(step):
    """The fitted estimator inside a step (skada's selectors keep it in ``base_estimator_``)."""
    return getattr(step, "base_estimator_", step)


class ReverseValidationScorer:
    """Score a fitted adaptation pipeline without target labels (reverse validation).

    For a pipeline ``pre -> OTNetAdapter -> post`` (``post`` ending with a classifier):

    1. the fitted pipeline labels the training target rows (pseudo-labels);
    2. a fresh copy of ``post`` is trained on the target rows with those pseudo-labels;
    3. that reverse classifier labels the held-out *source* rows, transported by the adapter;
       the score is its accuracy against their true labels.

    A map that sends each source class onto the matching target class scores high: the
    pseudo-labels are right and the reverse classifier recovers the source labels. Usable as
    ``GridSearchCV(..., scoring=ReverseValidationScorer())``; with skada's stacked convention
    it requests ``sample_domain`` and uses only the source rows with a label.

    Notes
    -----
    What it detects: maps that mix classes (pseudo-labels then disagree with the transported
    source), a map too far from convergence, a poor classifier. What it cannot: a map that
    sends one class consistently onto another class's target region scores as well as the
    right one (the cycle closes either way), and it does not estimate the target accuracy
    itself, only ranks configurations.

    With ``OTNetAdapter(strength=...)`` in the grid it decides whether to adapt at all
    (``strength=0`` against ``1``). Measured on skada's shifted datasets (five seeds each):
    no adaptation kept on every target-shift dataset and the map on every conditional-shift
    one, both right; on the covariate shift no adaptation (right) kept on two seeds of five,
    since with no adaptation held-out source rows outside the target's support are
    extrapolated by the reverse classifier. It favours intermediate strengths over the full
    map (on the rotated digits ``strength=0.5`` on three splits of three, 2.6-3.2 points of target
    accuracy below ``1``): search ``strength`` in ``{0, 1}``, not between.

    Examples
    --------
    >>> import numpy as np
    >>> import sklearn
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from skot.da import OTNetAdapter, ReverseValidationScorer
    >>> rng = np.random.default_rng(0)
    >>> Xs = rng.normal(size=(200, 2)); ys = (Xs[:, 0] > 0).astype(int)
    >>> Xt = rng.normal(size=(100, 2)) + [4.0, 1.0]
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     pipe = make_pipeline(OTNetAdapter(), KNeighborsClassifier())
    ...     pipe = pipe.fit(Xs, ys, X_target=Xt)
    >>> score = ReverseValidationScorer()(pipe, Xs, ys)
    >>> bool(score > 0.9)
    True
    """

    def get_metadata_routing(self) -> MetadataRequest:
        """Request ``sample_domain`` for scoring (used by metadata routing).

        Returns
        -------
        request : MetadataRequest
            ``sample_domain`` requested by ``score``.
        """
        request = MetadataRequest(owner=type(self).__name__)
        request.score.add_request(param="sample_domain", alias=True)
        return request

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __call__(self, estimator, X, y, sample_domain=None):
        """Reverse-validation accuracy of ``estimator`` on the labelled source rows of ``X``.

        Parameters
        ----------
        estimator : Pipeline
            Fitted, with one :class:`OTNetAdapter` step (possibly inside a skada selector).
        X : array-like of shape (n_samples, n_features)
            Held-out source rows (or stacked rows with ``sample_domain``).
        y : array-like of shape (n_samples,)
            Their labels.
        sample_domain : array-like of shape (n_samples,), default=None
            Domain of each row; only source rows (``>= 0``) are scored.

        Returns
        -------
        score : float
            Accuracy in ``[0, 1]``, higher is better.
        """
        if not isinstance(estimator, Pipeline):
            raise TypeError(
                f"ReverseValidationScorer needs a fitted Pipeline, got {type(estimator).__name__}"
            )
        position = [
            i
            for i, (_, step) in enumerate(estimator.steps)
            if isinstance(_unwrap(step), OTNetAdapter)
        ]
        if not position:
            raise ValueError("the pipeline has no OTNetAdapter step")
        k = position[0]
        if k == len(estimator.steps) - 1:
            raise ValueError("the OTNetAdapter must be followed by a classifier")
        adapter = _unwrap(estimator.steps[k][1])
        check_is_fitted(adapter)
        y = np.asarray(y)
        if sample_domain is not None:
            keep = np.asarray(sample_domain) >= 0
            X = _safe_indexing(X, keep)
            y = y[keep]
        if y.shape[0] == 0:
            raise ValueError("no labelled source row to score (all rows are target rows)")
        pre, post = estimator[:k], estimator[k + 1 :]
        Zs = pre.transform(X) if k > 0 else X
        Zs = adapter.transform_source(Zs)
        pseudo = post.predict(adapter.X_target_)
        if np.unique(pseudo).shape[0] < 2:
            return float(np.mean(pseudo[0] == y))
        reverse = clone(post).fit(adapter.X_target_, pseudo)
        return float(np.mean(reverse.predict(Zs) == y))
