"""Model selection without target labels: :class:`ReverseValidationScorer`."""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils.metadata_routing import MetadataRequest
from sklearn.utils.validation import _num_samples, check_is_fitted

from ._adapter import OTNetAdapter
from ._domains import _source_mask

__all__ = ["ReverseValidationScorer"]


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

    With ``OTNetAdapter(strength=...)`` in the grid it decides whether to adapt at all:
    search ``strength`` in ``{0, 1}``, not between (it tends to favour intermediate strengths
    over the full map). Under a covariate shift it leans towards adapting: without
    adaptation, held-out source rows outside the target's support are extrapolated by the
    reverse classifier. See the user guide for measurements.

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
            keep = _source_mask(sample_domain, _num_samples(X))
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
