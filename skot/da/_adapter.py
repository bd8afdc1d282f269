"""The domain-adaptation transformer: :class:`OTNetAdapter`."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import sparse
from sklearn.base import (
    BaseEstimator,
    OneToOneFeatureMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .._cells import median_spacing, nearest_rows
from .._discrete import (
    _KERNEL_CUTOFF,
    entropic_plan,
    exact_plan,
    has_pot,
    rounded,
    sinkhorn_scalings,
    squared_distances,
    strict_duals,
    transport_from_duals,
)
from .._validation import _check_array_named, check_target_feature_names, validate_X
from ._defaults import (
    _COARSE_SLACK,
    _SLACK,
    _discreteness_floor,
    _fit_default,
    exact_by_default,
)
from ._domains import _source_mask, _split_domains
from ._proportions import _estimate_proportions

__all__ = ["OTNetAdapter"]


def _label_scale(Xs: np.ndarray) -> float:
    """Root mean squared distance of the source to its mean: the unit of ``label_weight``."""
    spread = float(np.sqrt(((Xs - Xs.mean(axis=0)) ** 2).sum(axis=1).mean()))
    return spread if spread > 0 else 1.0


#: Cells per target row of the sparse Sinkhorn of the semi-discrete route's smoothing.
_SOFT_CELLS = 64
#: Target rows whose nearest neighbours give the spacing (a median: from 2,048 rows within 2% of
#: every row's, measured at n = 5,000-20,000, d = 2-1,000).
_SPACING_ROWS = 2048
#: Target rows whose best cells are checked first, before every row's.
_PROBE_ROWS = 256

#: ``label_weight="auto"`` with labels (see the user guide, "Class-aware transport").
_AUTO_LABEL_WEIGHT = 0.5

#: Median over the features of the target's spread over the source's (or its inverse), and
#: median distance of the means in source standard deviations, beyond which the two look
#: preprocessed differently (a domain shift moves some features, not all of them by as much).
_SCALE_RATIO = 3.0
_MEAN_OFFSET = 10.0


def _check_target_scale(Xs: np.ndarray, Xt: np.ndarray) -> None:
    """Warn when the target lies far outside the source's scale: the sign of a pipeline whose
    earlier steps transformed X but not X_target (no ``transform_input``)."""
    std_s, std_t = Xs.std(axis=0), Xt.std(axis=0)
    varied = std_s > 0
    if not varied.any():
        return
    ratio = float(np.median(std_t[varied] / std_s[varied]))
    offset = float(np.median(np.abs(Xt.mean(axis=0) - Xs.mean(axis=0))[varied] / std_s[varied]))
    if (1 / _SCALE_RATIO <= ratio <= _SCALE_RATIO) and offset <= _MEAN_OFFSET:
        return
    warnings.warn(
        f"X_target's features spread {ratio:.3g} times as much as X's and their means lie "
        f"{offset:.3g} source standard deviations away (medians over the features): the "
        "target looks preprocessed differently from the source. In a Pipeline the steps "
        "before OTNetAdapter transform X_target only with Pipeline(..., "
        "transform_input=['X_target']) (metadata routing enabled); without it they fit and "
        "transform X alone. If the domains really differ that much, scale them alike first "
        "(e.g. a StandardScaler per domain).",
        UserWarning,
        stacklevel=4,
    )


def _spacing(At: np.ndarray) -> float:
    """Median over the target rows (up to :data:`_SPACING_ROWS` of them, drawn with a fixed
    seed; repeated rows left out) of the squared distance to the nearest other target row:
    the unit of ``smoothing`` (a temperature of one spacing weighs a neighbouring target row
    about ``exp(-1)`` as much as the row's own, whatever the scale or dimension)."""
    return median_spacing(At, _SPACING_ROWS) ** 2


def _exact_applies(n_source: int, n_target: int, n_features: int, weights) -> bool:
    """Whether the default transport couples the two samples exactly: where
    :func:`._defaults.exact_by_default` says so, by POT's ``ot.emd`` (installed) or SciPy's
    assignment (equal sizes, uniform weights)."""
    if not exact_by_default(n_source, n_target, n_features):
        return False
    return has_pot() or (n_source == n_target and weights is None)


def _spread(proba, Xt, n_classes, *, alpha=0.8, n_rounds=10):
    """Label spreading on the target: ``q <- (1 - alpha) q0 + alpha * mean of q over the k
    nearest target rows``, ``n_rounds`` times (Zhou et al., 2004), with ``k`` from 3 to 10
    (about a quarter of a class's share of the target rows). Neighbouring target rows then
    agree, which the class-aware cost turns into class-consistent cells."""
    n = Xt.shape[0]
    k = int(np.clip(n // (4 * n_classes), 3, 10))
    if n <= k:
        return proba
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(Xt).kneighbors(Xt, return_distance=False)
    neighbours = neighbours[:, 1:]
    q = proba
    for _ in range(n_rounds):
        q = (1 - alpha) * proba + alpha * q[neighbours].mean(axis=1)
    return q / q.sum(axis=1, keepdims=True)


def _coupling(As, At, a, b):
    """The exact coupling of ``As`` (weights ``a``) and ``At`` (weights ``b``) for the cost
    ``C = |x - y|^2`` (sparse: a vertex of the transport polytope has at most ``n + m - 1``
    pairs), its row and column duals, and ``C``."""
    C = squared_distances(As, At)
    plan, u, v, _ = exact_plan(C, a, b)
    return sparse.csr_array(plan), u, v, C


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
        The (unfitted) transport, cloned at fit; its parameters are reachable by grid search
        as ``<step>__transport__<name>``. ``None`` (the default) couples the two samples
        exactly: POT's ``ot.emd`` when POT is installed, otherwise SciPy's
        ``linear_sum_assignment`` when source and target have as many rows and uniform
        weights. ``transport_`` is then an :class:`~skot.OTNetTransport` whose heights come
        from the coupling's duals (moved inside the optimal face by a small margin), so new
        rows map by the same power diagram. Beyond 5,000 x 5,000 source-target pairs (fewer
        from 8 features on: ``skot.da._defaults.exact_by_default``), or where no exact
        solver applies (no POT and unequal sizes or weights), a semi-discrete
        ``OTNetTransport(height="vector", solver="newton")`` stopped 1% above the smallest
        marginal error a hard map of the two sample sizes can reach, with a
        ``ConvergenceWarning`` if it stops short (see the user guide).
    direction : {"barycentric", "forward"}, default="barycentric"
        ``"barycentric"`` moves every source row to the mean of the target rows it is coupled
        with (its barycentric image): several target rows when the target is larger than the
        source, one when it is smaller. ``"forward"`` moves it to one target row, the cell of
        the hard map (``transport.epsilon > 0``: a softmax-weighted mean). With a given
        ``transport``, ``"barycentric"`` fits the map from the target samples onto the source
        points and takes the mean of the target samples of each cell.
    smoothing : float, default=0.5
        Entropic smoothing of the barycentric images with the default transport: the images
        come from the entropic coupling with the same (class-aware) cost and a temperature of
        ``smoothing`` times the target's spacing (the median over the target rows of the
        squared distance to the nearest other target row), which averages nearby target rows
        the same way whatever the data's scale and dimension (beyond the exact coupling's
        sizes, the same coupling by Sinkhorn's scaling of the semi-discrete heights). ``0``
        keeps the exact coupling's images. Ignored with ``direction="forward"`` or a given
        ``transport``.
    label_weight : float or "auto", default="auto"
        Class-aware transport. ``"auto"``: ``0.5`` when ``y`` is given, else ``0``. ``0``
        ignores the labels. ``> 0`` appends
        ``label_weight * s * onehot(y)`` to the source rows and ``label_weight * s * q`` to
        the target rows, where ``s`` is the root mean squared distance of the source to its
        mean and ``q`` are target class probabilities (pseudo-labels): moving a point of class
        ``k`` onto a target believed to be of class ``l != k`` then costs about
        ``2 * label_weight**2`` times a typical squared distance more, so couplings stop
        mixing source classes. The default pseudo-labels are spread over the target's
        nearest-neighbour graph (neighbouring target rows agree). With a given or
        semi-discrete transport this label-aware map stops at a marginal error of 5%. It does
        not change the mass each class carries (see ``class_proportions``).
    label_estimator : classifier, default=None
        Classifier that gives the target pseudo-labels ``q``: fitted on the transported source
        and its labels, then ``predict_proba`` on the target. ``None`` uses
        ``KNeighborsClassifier(n_neighbors=10)`` (fewer with fewer source rows), whose
        probabilities are then spread over the target: ``q <- 0.2 q0 + 0.8 * (mean of q
        over the k nearest target rows)``, ten times, ``k`` from 3 to 10 (label spreading,
        Zhou et al. 2004). Used only when ``label_weight > 0``.
    n_label_iter : int, default=3
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
        proportion}`` gives known proportions (positive, normalised here). Unequal
        weights need POT for the exact coupling; the semi-discrete fallback stops 5% above the
        rounding floor of the cell counts, or after 300 steps, without a retry (see the user
        guide).
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
    label_weight_ : float
        The label weight used (``label_weight``, with ``"auto"`` resolved).
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
    >>> from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
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
        "label_weight": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "label_estimator": [HasMethods(["fit", "predict_proba"]), None],
        "n_label_iter": [Interval(Integral, 1, None, closed="left")],
        "class_proportions": [StrOptions({"source", "estimate"}), dict],
        "strength": [Interval(Real, 0, 1, closed="both")],
        "smoothing": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        transport=None,
        *,
        direction="barycentric",
        smoothing=0.5,
        label_weight="auto",
        label_estimator=None,
        n_label_iter=3,
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
        self.smoothing = smoothing

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
            check_target_feature_names(self, X_target)
            X_target = _check_array_named(X_target, "X_target", dtype=[np.float64, np.float32])
            if X_target.shape[1] != X.shape[1]:
                raise ValueError(
                    f"X_target has {X_target.shape[1]} features, but X has {X.shape[1]} features"
                )
        Xs, ys, Xt, source = _split_domains(X, y, X_target, sample_domain)
        if Xt.shape[0] < 2:
            raise ValueError(f"X_target must have at least 2 rows, got {Xt.shape[0]}")
        Xs64, Xt64 = np.asarray(Xs, dtype=np.float64), np.asarray(Xt, dtype=np.float64)
        _check_target_scale(Xs64, Xt64)
        self.classes_ = None
        codes = None
        if ys is not None:
            check_classification_targets(ys)
            encoder = LabelEncoder().fit(ys)
            self.classes_ = encoder.classes_
            codes = encoder.transform(ys)
        if self.label_weight == "auto":
            self.label_weight_ = _AUTO_LABEL_WEIGHT if codes is not None else 0.0
        else:
            self.label_weight_ = float(self.label_weight)
        if self.label_weight_ > 0 and codes is None:
            raise ValueError(
                f"label_weight={self.label_weight} needs the source labels y; got y=None"
            )
        self.X_source_ = Xs64
        self.X_target_ = Xt64
        self.target_proba_ = None
        weights = self._class_weights(Xs64, codes, Xt64)
        if self.transport is None and _exact_applies(
            Xs64.shape[0], Xt64.shape[0], Xs64.shape[1], weights
        ):
            moved = self._fit_exact(Xs64, Xt64, codes, weights)
        else:
            moved = self._fit_iterative(Xs64, Xt64, codes, weights)
        self.X_source_transported_ = self._blend(Xs64, moved)
        return X, source

    def _fit_iterative(self, Xs64, Xt64, codes, weights):
        """The map by a semi-discrete transport (given, or the default one); returns the
        images of the training source rows."""
        # With label_weight > 0 this first map only feeds the pseudo-labeller: a rough one
        # suffices.
        first_slack = _COARSE_SLACK if self.label_weight_ > 0 else _SLACK
        self.transport_ = self._fit_map(
            Xs64, Xt64, slack=first_slack, weights=weights, warn=self.label_weight_ == 0
        )
        moved = self._training_images(Xs64, Xt64)
        As, At = Xs64, Xt64
        if self.label_weight_ > 0:
            n_classes = len(self.classes_)
            onehot = np.eye(n_classes)[codes]
            scale = self.label_weight_ * _label_scale(Xs64)
            for _ in range(self.n_label_iter):
                proba = self._pseudo_labels(moved, codes, Xt64, n_classes)
                self.target_proba_ = proba
                As = np.hstack([Xs64, scale * onehot])
                At = np.hstack([Xt64, scale * proba])
                # Stopping early leaves the mass that would cross a label gap in its class.
                self.transport_ = self._fit_map(As, At, slack=_COARSE_SLACK, weights=weights)
                moved = self._training_images(As, At)[:, : Xs64.shape[1]]
        if self.transport is None and self.smoothing > 0 and self.direction == "barycentric":
            moved = self._soft_images(As, At, moved, Xs64.shape[1])
        return moved

    def _soft_images(self, As, At, moved, d):
        """Barycentric images of the source rows ``As`` under the entropic coupling of the
        target rows ``At`` with them at ``smoothing`` times the target's spacing, the
        semi-discrete form of :meth:`_fit_exact`'s: Sinkhorn's scaling from ``transport_``'s
        hard-map heights (a temperature ``reg`` on the squared distances is ``reg / 2`` on
        the scores). Where every target row's :data:`_SOFT_CELLS` best cells hold all but
        ``exp(-50)`` of its kernel (low dimension) and they admit a coupling, on those cells
        alone; else by passes over every cell. ``moved`` where a row's soft cell holds no mass."""
        transport = self.transport_
        values = np.hstack([At[:, :d], np.ones((At.shape[0], 1))])
        temperature = 0.5 * self.smoothing * _spacing(At)
        n, m = At.shape[0], transport.target_.shape[0]
        width = min(_SOFT_CELLS, m)

        def cut_off(rows):  # each row's kernel beyond its best cells below exp(-cutoff)
            scores, cells = transport._top_cells(rows, width)
            R = (scores[:, :1] - scores) / temperature  # >= 0, a zero in every row
            return width == m or R[:, -1].min() >= _KERNEL_CUTOFF, R, cells

        scalings, holds = None, False
        # A few rows first: in high dimension they already fail, and the pass over every
        # row (in float64) is saved.
        if cut_off(At[:_PROBE_ROWS])[0]:
            holds, R, cells = cut_off(At)
            # every point among some row's best cells
            holds = holds and bool((np.bincount(cells.ravel(), minlength=m) > 0).all())
        if holds:
            # A zero in every column too (as in entropic_plan): no column of the kernel
            # underflows, whatever the temperature.
            column_min = np.full(m, np.inf)
            np.minimum.at(column_min, cells.ravel(), R.ravel())
            R -= column_min[cells]
            width = cells.shape[1]
            rows = np.arange(0, n * width + 1, width)
            K = sparse.csr_matrix((np.exp(-R).ravel(), cells.ravel(), rows), shape=(n, m))
            scalings = sinkhorn_scalings(
                K, np.full(n, 1.0 / n), transport.target_weight_, KT=K.T.tocsr()
            )
        if scalings is not None:
            r, c = scalings
            sums = np.asarray(K.multiply(r[:, None]).multiply(c[None, :]).T @ values)
        else:  # every cell (also where those best cells admit no coupling)
            sums = transport._balanced_soft_sums(At, values, temperature)
        sums = sums[transport._nearest_target(As)]
        mass = sums[:, -1:]
        held = mass[:, 0] > 0
        images = moved.copy()
        images[held] = sums[held, :-1] / mass[held]
        return images

    def _fit_exact(self, Xs64, Xt64, codes, weights):
        """The map from the exact coupling of the two samples (``transport=None`` where an
        exact solver applies); returns the images of the training source rows.

        Every class-aware round solves the coupling again in augmented coordinates. The
        images are the barycentric ones (``direction="barycentric"``: the mean of the target
        rows each source row is coupled with) or the hard map's. ``transport_`` is the power
        diagram of the last coupling's duals, in the adapter's direction.
        """
        ns, nt = Xs64.shape[0], Xt64.shape[0]
        a = np.full(ns, 1.0 / ns) if weights is None else weights / weights.sum()
        b = np.full(nt, 1.0 / nt)
        As, At = Xs64, Xt64
        plan, u, v, C = _coupling(As, At, a, b)
        moved = self._plan_images(plan, As, At, u, v)
        if self.label_weight_ > 0:
            n_classes = len(self.classes_)
            onehot = np.eye(n_classes)[codes]
            scale = self.label_weight_ * _label_scale(Xs64)
            As = np.hstack([Xs64, scale * onehot])
            for _ in range(self.n_label_iter):
                proba = self._pseudo_labels(moved, codes, Xt64, n_classes)
                self.target_proba_ = proba
                At = np.hstack([Xt64, scale * proba])
                plan, u, v, C = _coupling(As, At, a, b)
                moved = self._plan_images(plan, As, At, u, v)[:, : Xs64.shape[1]]
        self.transport_, margin = self._transport_from_plan(plan, C, As, At, a, b, u, v)
        # (With a margin the diagram holds the coupling; a marginal error a hair above tol is
        # then the discreteness floor's rounding, not a miss.)
        if margin == 0 and not self.transport_.converged_:
            warnings.warn(
                "OTNetAdapter: the power diagram recovered from the exact coupling's duals, "
                "and Newton steps from them, reach only a marginal error of "
                f"{self.transport_.marginal_error_:.3g} > tol={self.transport_.tol:.3g}: its "
                "float32 scores cannot separate the coupling's near ties at "
                f"{As.shape[0]} x {At.shape[0]} rows. The adapted training rows follow the "
                "exact coupling, but new rows mapped by transport_ will not match it; refit "
                "with the new rows among the source instead.",
                ConvergenceWarning,
                stacklevel=3,
            )
        if self.smoothing > 0 and self.direction == "barycentric":
            plan = entropic_plan(C, a, b, self.smoothing * _spacing(At), u, v)
            moved = (plan @ At[:, : Xs64.shape[1]]) / plan.sum(axis=1, keepdims=True)
        if self.direction == "forward":
            moved = np.asarray(self.transport_.transform(As), dtype=np.float64)[:, : Xs64.shape[1]]
        return moved

    def _plan_images(self, plan, As, At, u, v):
        """Images of the source rows under the coupling: barycentric, or (forward) the target
        row each row is most coupled with."""
        if self.direction == "forward":
            return At[rounded(plan)]
        return (plan @ At) / plan.sum(axis=1)[:, None]

    def _transport_from_plan(self, plan, C, As, At, a, b, u, v):
        """The fitted transport whose power diagram is the coupling's (heights from its
        duals): source samples onto target points, or the reverse for ``"barycentric"``; and
        the margin by which the duals hold the coupling (``0``: none held). ``C``: the cost
        matrix of ``As`` against ``At``."""
        uniform_a = None if np.all(a == a[0]) else a
        tol = max(_SLACK, 1.01 / max(As.shape[0], At.shape[0]))
        if self.direction == "forward":
            duals, margin = strict_duals(C, rounded(plan), v)
            transport = transport_from_duals(
                As, At, duals, sample_weight=uniform_a, tol=tol, polish=margin == 0
            )
            return transport, margin
        duals, margin = strict_duals(np.ascontiguousarray(C.T), rounded(plan.T), u)
        transport = transport_from_duals(
            At,
            As,
            duals,
            target_weight=uniform_a,
            tol=tol
            + _discreteness_floor(
                At.shape[0], As.shape[0], None if uniform_a is None else ("targets", a)
            ),
            polish=margin == 0,
        )
        return transport, margin

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

    def _fit_map(self, Xs, Xt, slack=_SLACK, weights=None, warn=True):
        """Fit the map of ``Xs`` (rows weighted by ``weights``, uniform if ``None``) onto
        ``Xt`` in the adapter's direction: a clone of ``transport``, or the default transport
        (``slack``, ``warn``: see ``_defaults._fit_default``)."""
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
        own = transport._nearest_target(rows)
        images = transport.barycenters_[own].astype(np.float64)  # as inverse_transform
        # An empty cell's barycentre would be the source row itself (not transported): take
        # the target sample closest to entering the cell instead, as label_proportions does
        # for labels.
        inside, entering = transport._cell_entries(samples, own)
        images[~inside] = samples[entering[~inside]]
        return images

    def _pseudo_labels(self, moved, codes, Xt, n_classes):
        """Target class probabilities: the label estimator trained on the transported source
        (the default one's spread over the target's nearest-neighbour graph, :func:`_spread`)."""
        est = (
            KNeighborsClassifier(n_neighbors=min(10, moved.shape[0]))
            if self.label_estimator is None
            else clone(self.label_estimator)
        )
        est.fit(moved, codes)
        proba = np.zeros((Xt.shape[0], n_classes))
        proba[:, np.asarray(est.classes_, dtype=int)] = est.predict_proba(Xt)
        return _spread(proba, Xt, n_classes) if self.label_estimator is None else proba

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
        if self.direction == "forward" and self.label_weight_ == 0 and not exact.all():
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
