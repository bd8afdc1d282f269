"""The domain-adaptation transformer: :class:`OTNetAdapter`."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    OneToOneFeatureMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .._cells import nearest_rows
from .._validation import _check_array_named, validate_X
from ._defaults import _COARSE_SLACK, _fit_default
from ._domains import _source_mask, _split_domains
from ._proportions import _estimate_proportions

__all__ = ["OTNetAdapter"]


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
        ``KNeighborsClassifier(n_neighbors=10)`` (fewer with fewer source rows). Used only
        when ``label_weight > 0``.
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
        rows best (see the user guide).
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
        the right amount of transport is often none); search those two values, not
        intermediate ones (see the user guide).

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
    common shift and their proportions (see the user guide for where that holds), and costs
    40 short warm-started fits of the transport before the map itself.

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
        X = validate_X(self, X, reset=True, ensure_min_samples=2)
        if X_target is not None:
            X_target = _check_array_named(X_target, "X_target", dtype=[np.float64, np.float32])
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
        # With label_weight > 0 this first map only feeds the pseudo-labeller: a rough one
        # suffices.
        first_slack = _COARSE_SLACK if self.label_weight > 0 else 5e-3
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
                # Stopping early leaves the mass that would cross a label gap in its class.
                self.transport_ = self._fit_map(
                    As, At, slack=_COARSE_SLACK, weights=weights, step_factor=3.0
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
        ``Xt`` in the adapter's direction: a clone of ``transport``, or the default transport
        (``slack``, ``step_factor``, ``warn``: see ``_defaults._fit_default``)."""
        fit_params, floor_weights = {}, None
        if weights is not None:
            side = "sample_weight" if self.direction == "forward" else "target_weight"
            fit_params[side] = weights
            floor_weights = ("samples" if self.direction == "forward" else "targets", weights)
        if self.direction == "barycentric":
            Xs, Xt = Xt, Xs
        if self.transport is not None:
            return clone(self.transport).fit(Xs, X_target=Xt, **fit_params)
        return _fit_default(
            Xs,
            Xt,
            fit_params,
            slack=slack,
            floor_weights=floor_weights,
            step_factor=step_factor,
            warn=warn,
        )

    def _training_images(self, rows, samples):
        """Images of the training source rows ``rows`` (in the transport's coordinates);
        ``samples`` are the target rows the barycentric direction was fitted on."""
        if self.direction == "forward":
            return np.asarray(self.transport_.transform(rows), dtype=np.float64)
        # inverse_transform matches each row to its own target point (a source point here)
        # and returns the mean of the target samples of its cell.
        transport = self.transport_
        images = np.asarray(transport.inverse_transform(rows), dtype=np.float64)
        occupied = np.zeros(transport.target_.shape[0], dtype=bool)
        occupied[transport.predict_index(samples)] = True
        own = transport._nearest_target(rows)
        empty = ~occupied[own]
        if empty.any():
            # An empty cell's barycentre would be the source row itself (not transported):
            # take the target sample closest to entering the cell instead, as
            # label_proportions does for labels.
            images[empty] = samples[transport._closest_to_enter(samples, own[empty])]
        return images

    def _pseudo_labels(self, moved, codes, Xt, n_classes):
        est = (
            KNeighborsClassifier(n_neighbors=min(10, moved.shape[0]))
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
        X = validate_X(self, X, reset=False)
        if sample_domain is None:
            return X
        source = _source_mask(sample_domain, X.shape[0])
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
        X = validate_X(self, X, reset=False)
        X64 = np.asarray(X, dtype=np.float64)
        near = nearest_rows(X64, self.X_source_)
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


#: sklearn's generic checks that fit on ``X`` alone. The adapter refuses a fit without target
#: data (a clear error, rather than silently not adapting when routing was forgotten).
_FIT_NEEDS_TARGET = (
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_dtype_object",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
    "check_transformer_preserve_dtypes",
)


def _expected_failed_checks(estimator) -> dict[str, str]:
    """sklearn's estimator checks that ``estimator`` (an :class:`OTNetAdapter`) fails, with
    the reason: the ``expected_failed_checks`` of ``parametrize_with_checks``.

    Parameters
    ----------
    estimator : OTNetAdapter
        The instance under test (the list does not depend on its parameters).

    Returns
    -------
    failures : dict of str to str
        Check name to reason.
    """
    reason = "fit needs target data (X_target or sample_domain); the check fits on X alone"
    return dict.fromkeys(_FIT_NEEDS_TARGET, reason)
