"""Tests of skot.da: pipelines with metadata routing, skada, label transfer, scorers."""

import pickle
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from skot import OTNetTransport
from skot.da import OTNetAdapter, ReverseValidationScorer, label_proportions, transfer_labels
from skot.da._defaults import _discreteness_floor
from skot.da._proportions import _estimate_proportions


def _shifted_problem(seed=0, n_source=120, n_target=60, shift=(5.0, 2.0)):
    """Two classes (left/right half of a Gaussian), target shifted and stretched."""
    rng = np.random.default_rng(seed)
    Xs = rng.normal(size=(n_source, 2))
    ys = (Xs[:, 0] > 0).astype(int)
    Zt = rng.normal(size=(n_target, 2))
    yt = (Zt[:, 0] > 0).astype(int)
    Xt = Zt * [1.5, 1.0] + shift
    return Xs, ys, Xt, yt


#: The hard forward map without labels in the cost (images are target rows).
HARD = {"direction": "forward", "label_weight": 0.0}


def _pipeline(**adapter_params):
    return make_pipeline(
        StandardScaler(),
        OTNetAdapter(**adapter_params),
        KNeighborsClassifier(n_neighbors=5),
        transform_input=["X_target"],
    )


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


# ------------------------------------------------------------------ pipelines
def test_pipeline_routes_target_through_scaler(routing):
    Xs, ys, Xt, yt = _shifted_problem()
    pipe = _pipeline(**HARD).fit(Xs, ys, X_target=Xt)
    scaler, adapter, knn = (step for _, step in pipe.steps)
    # The scaler was fitted on the source only and also applied to the routed target.
    np.testing.assert_allclose(scaler.mean_, Xs.mean(axis=0))
    np.testing.assert_allclose(adapter.X_target_, scaler.transform(Xt))
    # The classifier learnt from the transported source: rows of the (scaled) target.
    np.testing.assert_allclose(knn._fit_X, adapter.X_source_transported_)
    targets = {row.tobytes() for row in adapter.X_target_}
    assert all(row.tobytes() in targets for row in adapter.X_source_transported_)
    # At predict time target rows are not transported again.
    np.testing.assert_array_equal(pipe.predict(Xt), knn.predict(scaler.transform(Xt)))
    adapted = pipe.score(Xt, yt)
    plain = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5)).fit(Xs, ys)
    assert adapted >= 0.9
    assert adapted > plain.score(Xt, yt) + 0.2


def test_fit_transform_versus_transform():
    Xs, ys, Xt, _ = _shifted_problem()
    adapter = OTNetAdapter(**HARD)
    moved = adapter.fit_transform(Xs, ys, X_target=Xt)
    assert moved.shape == Xs.shape
    np.testing.assert_allclose(moved, adapter.X_source_transported_)
    # transform: target rows pass through unchanged.
    np.testing.assert_array_equal(adapter.transform(Xt), Xt)
    # Rows marked as source are transported, target rows pass through.
    stacked = np.vstack([Xs[:5], Xt[:5]])
    out = adapter.transform(stacked, sample_domain=np.r_[np.ones(5), -np.ones(5)])
    np.testing.assert_allclose(out[:5], moved[:5])
    np.testing.assert_array_equal(out[5:], Xt[:5])
    # New source rows go through the map itself.
    new = Xs[:5] + 0.01
    np.testing.assert_allclose(adapter.transform_source(new), adapter.transport_.transform(new))


def test_float32_preserved():
    Xs, ys, Xt, _ = _shifted_problem()
    out = OTNetAdapter().fit_transform(Xs.astype(np.float32), ys, X_target=Xt)
    assert out.dtype == np.float32


def test_pandas_output_clone_and_pickle():
    pd = pytest.importorskip("pandas")
    Xs, ys, Xt, _ = _shifted_problem()
    frame = pd.DataFrame(Xs, columns=["a", "b"])
    adapter = clone(OTNetAdapter()).set_output(transform="pandas")
    moved = adapter.fit_transform(frame, ys, X_target=Xt)
    assert list(moved.columns) == ["a", "b"]
    np.testing.assert_allclose(moved.to_numpy(), adapter.X_source_transported_)
    restored = pickle.loads(pickle.dumps(adapter))
    new = frame.iloc[:4] + 0.05
    np.testing.assert_allclose(restored.transform_source(new), adapter.transform_source(new))


def test_pipeline_without_routing_uses_prefixed_params():
    # Routing disabled (sklearn's default): the target reaches the step by its prefixed name,
    # untouched by the scaler (so no scaler before the adapter here).
    Xs, ys, Xt, yt = _shifted_problem()
    pipe = make_pipeline(OTNetAdapter(), KNeighborsClassifier(n_neighbors=5))
    pipe.fit(Xs, ys, otnetadapter__X_target=Xt)
    assert pipe.score(Xt, yt) >= 0.9


def test_grid_search_and_cross_val_score_without_warnings(routing):
    Xs, ys, Xt, _ = _shifted_problem()
    pipe = _pipeline()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(
            pipe,
            {"otnetadapter__direction": ["forward", "barycentric"]},
            cv=KFold(3, shuffle=True, random_state=0),
            scoring=ReverseValidationScorer(),
        )
        search.fit(Xs, ys, X_target=Xt)
        scores = cross_val_score(
            clone(pipe), Xs, ys, params={"X_target": Xt}, cv=3, scoring=ReverseValidationScorer()
        )
    assert search.best_params_["otnetadapter__direction"] in {"forward", "barycentric"}
    assert np.all(search.cv_results_["mean_test_score"] > 0.8)
    assert scores.shape == (3,)
    assert np.all(scores > 0.8)


def test_grid_search_over_transport_parameter(routing):
    Xs, ys, Xt, _ = _shifted_problem(n_source=60, n_target=60)
    pipe = _pipeline(transport=OTNetTransport(height="vector", max_iter=300, random_state=0))
    search = GridSearchCV(
        pipe,
        {"otnetadapter__transport__epsilon": [0.0, 0.5]},
        cv=2,
        scoring=ReverseValidationScorer(),
    )
    # X_target has as many rows as X: it is split per fold like X (the documented gotcha).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(Xs, ys, X_target=Xt)
    assert search.best_estimator_[1].X_target_.shape == (60, 2)
    adapter = search.best_estimator_.named_steps["otnetadapter"]
    assert adapter.transport_.epsilon == search.best_params_["otnetadapter__transport__epsilon"]


def test_same_length_target_is_split_per_fold(routing):
    Xs, ys, Xt, _ = _shifted_problem(n_source=60, n_target=60)
    seen = []

    class Spy(OTNetAdapter):
        def fit_transform(self, X, y=None, *, X_target=None, sample_domain=None):
            seen.append(X_target.shape[0])
            return super().fit_transform(X, y, X_target=X_target, sample_domain=sample_domain)

    pipe = make_pipeline(Spy(), KNeighborsClassifier(), transform_input=["X_target"])
    cross_val_score(pipe, Xs, ys, params={"X_target": Xt}, cv=3)
    assert seen == [40, 40, 40]
    seen.clear()
    cross_val_score(pipe, Xs, ys, params={"X_target": Xt[:59]}, cv=3)
    assert seen == [59, 59, 59]


# ------------------------------------------------------------------ errors
def test_missing_target_is_a_clear_error():
    Xs, ys, _, _ = _shifted_problem()
    with pytest.raises(ValueError, match="needs unlabelled target data"):
        OTNetAdapter().fit(Xs, ys)


def test_pipeline_without_routing_enabled_says_so():
    Xs, ys, Xt, _ = _shifted_problem()
    with pytest.raises(ValueError, match="metadata routing"):
        _pipeline().fit(Xs, ys, X_target=Xt)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"X_target": np.zeros((5, 3))}, "X_target has 3 features"),
        ({"X_target": np.zeros((1, 2))}, "at least 2 rows"),
        ({"X_target": [[np.nan, 0.0], [1.0, 1.0]]}, "NaN"),
        ({"sample_domain": np.ones(7)}, "one entry per row"),
        ({"sample_domain": np.ones(120)}, "1 source|120 source and 0 target"),
        ({"X_target": np.zeros((5, 2)), "sample_domain": np.ones(120)}, "not both"),
    ],
)
def test_malformed_target_errors(kwargs, match):
    Xs, ys, _, _ = _shifted_problem()
    with pytest.raises(ValueError, match=match):
        OTNetAdapter().fit(Xs, ys, **kwargs)


def test_parameter_errors():
    Xs, ys, Xt, _ = _shifted_problem()
    with pytest.raises(InvalidParameterError, match="direction"):
        OTNetAdapter(direction="backward").fit(Xs, ys, X_target=Xt)
    with pytest.raises(ValueError, match="needs the source labels"):
        OTNetAdapter(label_weight=1.0).fit(Xs, X_target=Xt)
    with pytest.raises(InvalidParameterError, match="class_proportions"):
        OTNetAdapter(class_proportions="target").fit(Xs, ys, X_target=Xt)
    with pytest.raises(ValueError, match="class_proportions='estimate' needs the source labels"):
        OTNetAdapter(class_proportions="estimate").fit(Xs, X_target=Xt)
    with pytest.raises(ValueError, match=r"unknown keys \[2\], missing \[1\]"):
        OTNetAdapter(class_proportions={0: 0.5, 2: 0.5}).fit(Xs, ys, X_target=Xt)
    with pytest.raises(ValueError, match="finite and > 0"):
        OTNetAdapter(class_proportions={0: 1.0, 1: 0.0}).fit(Xs, ys, X_target=Xt)


# ------------------------------------------------------------------ skada convention
def test_stacked_sample_domain_convention():
    Xs, ys, Xt, _ = _shifted_problem()
    X = np.vstack([Xs, Xt])
    y = np.r_[ys, -np.ones(len(Xt), dtype=int)]
    sd = np.r_[np.ones(len(Xs)), -np.ones(len(Xt))]
    out = OTNetAdapter().fit_transform(X, y, sample_domain=sd)
    np.testing.assert_array_equal(out[len(Xs) :], Xt)
    reference = OTNetAdapter().fit_transform(Xs, ys, X_target=Xt)
    np.testing.assert_allclose(out[: len(Xs)], reference)


def _import_skada():
    # skada switches metadata routing on globally when imported: keep that inside a context.
    with sklearn.config_context(enable_metadata_routing=True):
        return pytest.importorskip("skada")


def _skada_conditional_shift(n_per_cluster):
    """skada's conditional-shift toy data, stacked with ``sample_domain`` (quietly: its
    helper warns about its own deprecated default)."""
    from skada.datasets import make_shifted_datasets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return make_shifted_datasets(
            n_samples_source=n_per_cluster,
            n_samples_target=n_per_cluster,
            shift="conditional_shift",
            noise=None,
            label="binary",
            random_state=0,
        )


def test_skada_pipeline_splitter_and_scorer():
    skada = _import_skada()
    from skada.metrics import PredictionEntropyScorer
    from skada.model_selection import SourceTargetShuffleSplit
    from sklearn.model_selection import cross_validate

    with sklearn.config_context(enable_metadata_routing=True):
        X, y, sd = _skada_conditional_shift(20)
        Xs, ys, Xt, yt = X[sd >= 0], y[sd >= 0], X[sd < 0], y[sd < 0]
        pipe = skada.make_da_pipeline(StandardScaler(), OTNetAdapter(), KNeighborsClassifier())
        y_masked = np.where(sd >= 0, y, -1)
        pipe.fit(X, y_masked, sample_domain=sd)
        adapter = pipe.named_steps["otnetadapter"].base_estimator_
        assert adapter.X_target_.shape[0] == Xt.shape[0]
        accuracy = np.mean(pipe.predict(Xt) == yt)
        plain = make_pipeline(StandardScaler(), KNeighborsClassifier()).fit(Xs, ys)
        # Measured: 1.0 adapted, 0.5 without adaptation.
        assert accuracy >= 0.9
        assert accuracy > np.mean(plain.predict(Xt) == yt) + 0.3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = cross_validate(
                pipe,
                X,
                y_masked,
                params={"sample_domain": sd},
                cv=SourceTargetShuffleSplit(n_splits=2, random_state=0),
                scoring={
                    "entropy": PredictionEntropyScorer(),
                    "reverse": ReverseValidationScorer(),
                },
            )
    assert np.all(np.isfinite(result["test_entropy"]))
    # sample_domain reaches the scorer, which scores only the labelled source rows.
    assert np.all(result["test_reverse"] >= 0.9)


# ------------------------------------------------------------------ label transfer
def test_transfer_labels_exact_on_translated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    ys = np.repeat(["a", "b", "c"], 30)
    Xs = centres[np.repeat([0, 1, 2], 30)] + 0.3 * rng.normal(size=(90, 2))
    order = rng.permutation(90)
    Xt, yt = Xs[order] + [1.0, -2.0], ys[order]
    ot = OTNetTransport(height="vector", random_state=0).fit(Xs, X_target=Xt)
    labels, proportions, classes = transfer_labels(ot, Xs, ys, Xt, return_proportions=True)
    np.testing.assert_array_equal(labels, yt)
    np.testing.assert_array_equal(classes, ["a", "b", "c"])
    np.testing.assert_allclose(proportions.sum(axis=1), 1.0)
    assert set(np.unique(proportions)) == {0.0, 1.0}
    # Without X_target: the rows of target_.
    own = transfer_labels(ot, Xs, ys)
    assert own.shape == (ot.target_.shape[0],)


def test_empty_cells_take_the_nearest_source_label():
    Xs = np.array([[0.0], [10.0]])
    ys = np.array([0, 1])
    Xt = np.array([[-1.0], [1.0], [9.0], [11.0]])
    ot = OTNetTransport(height="vector", max_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ot.fit(Xs, X_target=Xt)
    proportions, _ = label_proportions(ot, Xs, ys)
    np.testing.assert_allclose(proportions.sum(axis=1), 1.0)
    np.testing.assert_array_equal(transfer_labels(ot, Xs, ys, Xt), [0, 0, 1, 1])


def test_soft_proportions_match_the_entropic_map():
    Xs, ys, Xt, _ = _shifted_problem(n_source=80, n_target=40)
    ot = OTNetTransport(height="vector", epsilon=0.5, random_state=0, max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ot.fit(Xs, X_target=Xt)
    # The soft memberships used for the proportions reproduce the entropic map exactly.
    # epsilon is defined on the transport's standardised scores: scale_**2 in input units.
    scores = Xs @ ot.target_.T + ot.heights_
    temperature = ot.epsilon * ot.scale_**2
    member = np.exp((scores - scores.max(axis=1, keepdims=True)) / temperature)
    member /= member.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(member @ ot.target_, ot.transform(Xs), rtol=1e-5, atol=1e-5)
    proportions, _ = label_proportions(ot, Xs, ys)
    expected = np.stack([member[ys == k].sum(axis=0) for k in (0, 1)], axis=1)
    np.testing.assert_allclose(proportions, expected / expected.sum(axis=1, keepdims=True))
    assert 0 < proportions.min() < proportions.max() < 1


def test_label_transfer_errors():
    Xs, ys, Xt, _ = _shifted_problem()
    ot = OTNetTransport(height="vector", random_state=0, max_iter=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ot.fit(Xs, X_target=Xt)
    with pytest.raises(ValueError, match="one label per row"):
        label_proportions(ot, Xs, ys[:-1])
    with pytest.raises(ValueError, match="X_target has 3 features"):
        transfer_labels(ot, Xs, ys, np.zeros((2, 3)))


# ------------------------------------------------------------------ class-aware transport
class _Oracle(ClassifierMixin, BaseEstimator):
    """Predicts the class of the rule ``x0 > threshold`` (known pseudo-labels)."""

    def __init__(self, threshold=0.0):
        self.threshold = threshold

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        right = (np.asarray(X)[:, 0] > self.threshold).astype(float)
        return np.stack([1 - right, right], axis=1)


def test_class_aware_map_never_crosses_classes():
    # Source classes are left/right; the target is the same cloud turned by 90 degrees, so
    # the plain map sends many points across the class border.
    # Both domains have 50 points of each class, so a map that never crosses exists.
    rng = np.random.default_rng(1)
    side = np.repeat([-1.0, 1.0], 50)
    Xs = np.abs(rng.normal(size=(100, 2))) * [1.0, 3.0] * np.c_[side, rng.choice([-1, 1], 100)]
    ys = (Xs[:, 0] > 0).astype(int)
    Xt = np.abs(rng.normal(size=(100, 2))) * [3.0, 1.0] * np.c_[side, rng.choice([-1, 1], 100)]
    yt = (Xt[:, 0] > 0).astype(int)
    plain = OTNetAdapter(**HARD).fit(Xs, ys, X_target=Xt)
    target_class = {row.tobytes(): k for row, k in zip(Xt, yt, strict=True)}
    crossed = [
        target_class[row.tobytes()] != k
        for row, k in zip(plain.X_source_transported_, ys, strict=True)
    ]
    assert np.mean(crossed) > 0.05  # measured: 7% of the points
    aware = OTNetAdapter(direction="forward", label_weight=3.0, label_estimator=_Oracle())
    aware.fit(Xs, ys, X_target=Xt)
    np.testing.assert_array_equal(aware.target_proba_[:, 1], yt)
    landed = [target_class[row.tobytes()] for row in aware.X_source_transported_]
    np.testing.assert_array_equal(landed, ys)


def test_class_aware_default_pseudo_labels():
    Xs, ys, Xt, yt = _shifted_problem()
    adapter = OTNetAdapter(label_weight=1.0, n_label_iter=2).fit(Xs, ys, X_target=Xt)
    assert adapter.target_proba_.shape == (len(Xt), 2)
    np.testing.assert_allclose(adapter.target_proba_.sum(axis=1), 1.0)
    assert np.mean(adapter.target_proba_.argmax(axis=1) == yt) > 0.9
    # New source rows: displacement of the nearest training row.
    new = Xs[:3] + 1e-3
    expected = new + adapter.X_source_transported_[:3] - Xs[:3]
    np.testing.assert_allclose(adapter.transform_source(new), expected)


# ------------------------------------------------------------------ class proportions
def _label_shift_problem(target_share=0.2, scale=1.0, shift=(0.0, 0.0), seed=0):
    """Two blobs, 60 + 60 source points; the target has ``target_share`` of class 1 and is
    moved as a whole by ``x -> scale * x + shift``."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0]])
    ys = np.repeat([0, 1], 60)
    Xs = centres[ys] + 0.6 * rng.normal(size=(120, 2))
    n1 = int(round(120 * target_share))
    yt = np.repeat([0, 1], [120 - n1, n1])
    Xt = scale * (centres[yt] + 0.6 * rng.normal(size=(120, 2))) + shift
    return Xs, ys, Xt, yt


def test_discreteness_floor_with_weights():
    # Equal weights: the same value whichever side carries them.
    assert _discreteness_floor(200, 150, ("targets", np.ones(150))) == pytest.approx(1 / 6)
    assert _discreteness_floor(200, 150, ("samples", np.ones(200))) == pytest.approx(1 / 6)
    # 10 samples onto weights 0.25 / 0.75: counts 2.5 / 7.5 round to 2 / 8 (or 3 / 7).
    assert _discreteness_floor(10, 2, ("targets", [0.25, 0.75])) == pytest.approx(0.05)
    # Samples of weights 0.5, 0.3, 0.2 onto two cells: 0.5 | 0.5 packs exactly.
    assert _discreteness_floor(3, 2, ("samples", [0.5, 0.3, 0.2])) == pytest.approx(0.0)


def test_estimated_proportions_under_target_and_conditional_shift():
    # Target shift (20% of class 1 instead of 50%) with the whole target moved and shrunk.
    Xs, ys, Xt, _ = _label_shift_problem(0.2, scale=0.7, shift=(1.0, 2.0))
    pi = _estimate_proportions(Xs, ys, Xt, 2)
    assert pi.sum() == pytest.approx(1.0)
    assert abs(pi[1] - 0.2) < 0.05
    # Same proportions, the whole target moved and shrunk: the location-scale part keeps the
    # estimate at one half (without it, shrinking reads as a change of proportions).
    Xs, ys, Xt, _ = _label_shift_problem(0.5, scale=0.7, shift=(1.0, 2.0))
    pi = _estimate_proportions(Xs, ys, Xt, 2)
    assert abs(pi[1] - 0.5) < 0.05


@pytest.mark.parametrize("direction", ["forward", "barycentric"])
def test_estimated_proportions_keep_classes_apart(direction):
    Xs, ys, Xt, yt = _label_shift_problem(0.2, shift=(3.0, 1.0))
    plain = OTNetAdapter(direction=direction).fit(Xs, ys, X_target=Xt)
    np.testing.assert_allclose(plain.class_proportions_, [0.5, 0.5])
    knn = KNeighborsClassifier(n_neighbors=5)
    plain_acc = knn.fit(plain.X_source_transported_, ys).score(Xt, yt)
    adapter = OTNetAdapter(direction=direction, class_proportions="estimate")
    adapter.fit(Xs, ys, X_target=Xt)
    assert abs(adapter.class_proportions_[1] - 0.2) < 0.05
    estimated_acc = knn.fit(adapter.X_source_transported_, ys).score(Xt, yt)
    # Equal weights push 30% of the mass from class 1 into class 0's region.
    assert plain_acc < 0.85
    assert estimated_acc > 0.95


def test_barycentric_images_of_empty_cells_are_transported():
    # 40 source rows onto 10 target rows: at least 30 source cells are empty. Their rows
    # must still move to the target (they used to keep their own position).
    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(40, 2))
    Xt = rng.normal(size=(10, 2)) + [10.0, 0.0]
    # A semi-discrete transport: cells of the target rows on the source points.
    # (10 target samples onto 40 points: at least 30 cells are empty, a floor of 0.75.)
    transport = OTNetTransport(height="vector", tol=0.8, random_state=0)
    adapter = OTNetAdapter(transport, direction="barycentric").fit(Xs, X_target=Xt)
    moved = adapter.X_source_transported_
    assert moved[:, 0].min() >= Xt[:, 0].min() - 1e-4  # barycentres go through float32
    # An empty cell's image is one target row; an occupied one a mean of target rows.
    is_target_row = (np.abs(moved[:, None, :] - Xt[None, :, :]).max(axis=-1) < 1e-9).any(axis=1)
    assert is_target_row.sum() >= 30


def test_given_proportions_are_used():
    Xs, ys, Xt, yt = _label_shift_problem(0.2, shift=(3.0, 1.0))
    adapter = OTNetAdapter(direction="barycentric", class_proportions={0: 4.0, 1: 1.0})
    adapter.fit(Xs, ys, X_target=Xt)
    np.testing.assert_allclose(adapter.class_proportions_, [0.8, 0.2])
    # Source rows of class 1 weigh 0.2 / 60 each: their cells hold a fifth of the target.
    weights = adapter.transport_.target_weight_
    assert weights[ys == 1].sum() == pytest.approx(0.2)
    np.testing.assert_allclose(weights[ys == 1], 0.2 / 60)


# ------------------------------------------------------------------ strength
@pytest.mark.parametrize("strength", [-0.1, 1.5, "half", None])
def test_strength_is_validated(strength):
    Xs, ys, Xt, _ = _shifted_problem()
    with pytest.raises(InvalidParameterError, match="strength"):
        OTNetAdapter(strength=strength).fit(Xs, ys, X_target=Xt)


@pytest.mark.parametrize(
    "params", [{}, {"direction": "barycentric"}, {"label_weight": 1.0}], ids=str
)
def test_strength_zero_is_no_adaptation(routing, params):
    Xs, ys, Xt, _ = _shifted_problem()
    adapter = OTNetAdapter(strength=0.0, **params)
    moved = adapter.fit_transform(Xs, ys, X_target=Xt)
    np.testing.assert_array_equal(moved, Xs)
    np.testing.assert_array_equal(adapter.X_source_transported_, Xs)
    # The full map would move the source.
    assert not np.allclose(OTNetAdapter(**params).fit_transform(Xs, ys, X_target=Xt), Xs)
    # New source rows, stacked rows: unchanged too.
    new = Xs[:7] + 0.01
    np.testing.assert_array_equal(adapter.transform_source(new), new)
    stacked = np.vstack([new, Xt[:3]])
    out = adapter.transform(stacked, sample_domain=np.r_[np.ones(7), -np.ones(3)])
    np.testing.assert_array_equal(out, stacked)
    # The pipeline predicts exactly as scaler -> classifier without the adapter.
    pipe = _pipeline(strength=0.0, **params).fit(Xs, ys, X_target=Xt)
    plain = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5)).fit(Xs, ys)
    np.testing.assert_array_equal(pipe.predict(Xt), plain.predict(Xt))
    np.testing.assert_array_equal(
        pipe[-1].predict_proba(pipe[0].transform(Xt)), plain.predict_proba(Xt)
    )


def test_strength_one_is_the_full_map():
    Xs, ys, Xt, _ = _shifted_problem()
    default = OTNetAdapter(**HARD).fit(Xs, ys, X_target=Xt)
    full = OTNetAdapter(strength=1.0, **HARD).fit(Xs, ys, X_target=Xt)
    assert OTNetAdapter().strength == 1.0
    # Forward images are target rows, returned exactly (no x + 1 * (T(x) - x) rounding).
    images = full.transport_.transform(Xs)
    np.testing.assert_array_equal(full.X_source_transported_, images)
    np.testing.assert_array_equal(default.X_source_transported_, images)
    new = Xs[:5] + 0.01
    np.testing.assert_array_equal(full.transform_source(new), full.transport_.transform(new))


@pytest.mark.parametrize("direction", ["forward", "barycentric"])
def test_intermediate_strength_is_the_convex_combination(direction):
    Xs, ys, Xt, _ = _shifted_problem()
    adapter = OTNetAdapter(strength=0.3, direction=direction, label_weight=0.0)
    moved = adapter.fit_transform(Xs, ys, X_target=Xt)
    # The map's own images of the training rows (the coupling is exact: the same map).
    full = clone(adapter).set_params(strength=1.0).fit_transform(Xs, ys, X_target=Xt)
    np.testing.assert_allclose(moved, Xs + 0.3 * (full - Xs))
    assert not np.allclose(moved, full)
    # Out of sample: forward uses the map, barycentric the nearest row's displacement; both
    # move by 30% of it.
    new = Xs[:5] + 0.01
    if direction == "forward":
        expected = new + 0.3 * (adapter.transport_.transform(new) - new)
    else:
        expected = new + 0.3 * (full[:5] - Xs[:5])
    np.testing.assert_allclose(adapter.transform_source(new), expected)
    # float32 in, float32 out.
    assert adapter.fit_transform(Xs.astype(np.float32), ys, X_target=Xt).dtype == np.float32


@pytest.mark.parametrize(
    "share, shift, expected",
    [(0.2, (0.0, 0.0), 0.0), (0.5, (3.0, 1.0), 1.0)],
    ids=["target-shift-only", "moved-target"],
)
def test_grid_search_over_strength_without_target_labels(routing, share, shift, expected):
    # Target shift only (20% of class 1 in the target instead of 50%, nothing moved): an
    # equal-weight map pushes 30% of the mass into the wrong class, no adaptation is right.
    # Target moved by (3, 1), same proportions: the plain classifier mislabels a whole blob.
    # Measured reverse scores (strength 0, 0.5, 1): 0.983, 0.808, 0.883 and, at the defaults of
    # label_weight 0.5 and smoothing 0.5 spacings, 0.500, 0.975, 0.975 (a tie of the two
    # adapted settings: the test asks only that one of them wins).
    Xs, ys, Xt, yt = _label_shift_problem(share, shift=shift)
    search = GridSearchCV(
        _pipeline(),
        {"otnetadapter__strength": [0.0, 0.5, 1.0]},
        cv=KFold(3, shuffle=True, random_state=0),
        scoring=ReverseValidationScorer(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search.fit(Xs, ys, X_target=Xt)
    scores = search.cv_results_["mean_test_score"]
    if expected == 0.0:
        assert search.best_params_["otnetadapter__strength"] == 0.0
        assert scores[0] > np.sort(scores)[-2]  # no tie
    else:
        assert search.best_params_["otnetadapter__strength"] > 0.0
        assert scores[0] < min(scores[1:]) - 0.2
    accuracy = {
        s: clone(_pipeline(strength=s)).fit(Xs, ys, X_target=Xt).score(Xt, yt) for s in (0.0, 1.0)
    }
    assert accuracy[expected] > accuracy[1.0 - expected] + 0.1
    # The chosen setting beats the other end of the grid on the target too.
    assert np.mean(search.predict(Xt) == yt) > accuracy[1.0 - expected] + 0.1


def test_skada_grid_search_over_strength():
    skada = _import_skada()
    from skada.model_selection import SourceTargetShuffleSplit

    with sklearn.config_context(enable_metadata_routing=True):
        X, y, sd = _skada_conditional_shift(10)
        y_masked = np.where(sd >= 0, y, -1)
        search = GridSearchCV(
            skada.make_da_pipeline(StandardScaler(), OTNetAdapter(), KNeighborsClassifier()),
            {"otnetadapter__strength": [0.0, 1.0]},
            cv=SourceTargetShuffleSplit(n_splits=2, random_state=0),
            scoring=ReverseValidationScorer(),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            search.fit(X, y_masked, sample_domain=sd)
        accuracy = np.mean(search.predict(X[sd < 0]) == y[sd < 0])
    # Each class moved: no adaptation labels the target wrongly, the transport rightly
    # (measured reverse scores 0.375 and 1.0, target accuracy 1.0).
    assert search.best_params_["otnetadapter__strength"] == 1.0
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0] + 0.2
    assert accuracy >= 0.9


# ------------------------------------------------------------------ scorer
def test_reverse_scorer_ranks_adaptation_above_no_adaptation(routing):
    Xs, ys, Xt, _ = _shifted_problem()
    fitted = _pipeline().fit(Xs, ys, X_target=Xt)
    good = ReverseValidationScorer()(fitted, Xs, ys)

    class Identity(OTNetAdapter):
        def fit_transform(self, X, y=None, *, X_target=None, sample_domain=None):
            super().fit_transform(X, y, X_target=X_target, sample_domain=sample_domain)
            self.X_source_transported_ = self.X_source_.copy()
            return self.X_source_

    bad = make_pipeline(
        StandardScaler(),
        Identity(),
        KNeighborsClassifier(n_neighbors=5),
        transform_input=["X_target"],
    ).fit(Xs, ys, X_target=Xt)
    assert good > ReverseValidationScorer()(bad, Xs, ys) + 0.1


def test_reverse_scorer_errors():
    Xs, ys, _, _ = _shifted_problem()
    scorer = ReverseValidationScorer()
    with pytest.raises(TypeError, match="Pipeline"):
        scorer(KNeighborsClassifier().fit(Xs, ys), Xs, ys)
    with pytest.raises(ValueError, match="no OTNetAdapter"):
        scorer(make_pipeline(KNeighborsClassifier()).fit(Xs, ys), Xs, ys)
