"""Tests for :mod:`skot.sampling` (generation through the semi-discrete map)."""

import pickle

import numpy as np
import pytest
from scipy.optimize import nnls
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from skot import OTNetTransport
from skot.sampling import OTNetSampler

GAP = 2.0  # the two clusters below are at x = -4 and x = 4 with spread 0.4


def _transport():
    return OTNetTransport(height="vector", learning_rate=1e-2, tol=0.02, max_iter=500)


def _two_clusters(n=30, dim=2, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, dim))
    centres[:, 0] = [-4.0, 4.0]
    return np.vstack([c + 0.4 * rng.normal(size=(n, dim)) for c in centres])


@pytest.fixture(scope="module")
def clusters():
    return _two_clusters()


@pytest.fixture(scope="module")
def fitted(clusters):
    sampler = OTNetSampler(
        n_latent=3000, angle_threshold=15.0, transport=_transport(), random_state=0
    )
    return sampler.fit(clusters)


def _scores(sampler, Z):
    return Z @ sampler.target_.T + sampler.heights_


def _angles(Y, a, b):
    """Angles (degrees) between planes with normals (y, -1), standardised as documented."""
    Yc = Y - Y.mean(axis=0)
    Yc /= np.sqrt((Yc**2).sum(axis=1).mean())
    N = np.hstack([Yc, -np.ones((Y.shape[0], 1))])
    N /= np.linalg.norm(N, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip((N[a] * N[b]).sum(axis=-1), -1, 1)))


def _in_hull(point, vertices, tol=1e-6):
    """Whether ``point`` is a convex combination of the rows of ``vertices`` (NNLS)."""
    big = 1e3  # weight of the sum-to-one row
    A = np.vstack([vertices.T, big * np.ones(len(vertices))])
    b = np.append(point, big)
    w, residual = nnls(A, b)
    return residual < tol * (1 + np.abs(point).max())


def test_fit_attributes(fitted, clusters):
    assert fitted.n_features_in_ == 2
    assert fitted.transport_.converged_
    assert fitted.target_.shape == clusters.shape
    assert fitted.heights_.shape == (clusters.shape[0],)
    assert fitted.cell_counts_.sum() == 3000
    assert fitted.angle_percentiles_.shape == (101,)
    assert np.all(np.diff(fitted.angle_percentiles_) >= 0)
    # Heights are in latent coordinates: they give the transport's own assignment.
    Z = np.random.default_rng(1).uniform(-1, 1, size=(500, 2))
    ours = _scores(fitted, Z).argmax(axis=1)
    theirs = fitted.transport_.predict_index(fitted.latent_shift_ + fitted.latent_scale_ * Z)
    assert (ours == theirs).mean() > 0.99
    # Barycentres lie in their own cells.
    occupied = fitted.cell_counts_ > 0
    B = fitted.latent_barycenters_[occupied]
    assert (_scores(fitted, B).argmax(axis=1) == np.flatnonzero(occupied)).mean() > 0.95


def test_threshold_zero_returns_training_points(fitted, clusters):
    sampler = clone(fitted).set_params(angle_threshold=0.0).fit(clusters)
    X_new = sampler.sample(500, random_state=0)
    rows = {tuple(r) for r in clusters}
    assert all(tuple(r) in rows for r in X_new)
    # Every training point is produced (each has its share of the latent mass).
    assert len({tuple(r) for r in X_new}) > 0.9 * len(rows)


def test_boundary_weight_zero_returns_training_points(fitted, clusters):
    sampler = clone(fitted).set_params(boundary_weight=0.0).fit(clusters)
    X_new = sampler.sample(300, random_state=0)
    assert np.isin(X_new, clusters).all()


def test_nonzero_threshold_generates_new_points(fitted, clusters):
    X_new = fitted.sample(1000, random_state=0)
    d_nn = np.sqrt(((X_new[:, None, :] - clusters[None]) ** 2).sum(-1)).min(axis=1)
    assert np.median(d_nn) > 1e-3
    assert (d_nn > 1e-9).mean() > 0.5


def test_no_sample_in_the_gap(fitted, clusters):
    X_new = fitted.sample(3000, random_state=0)
    assert (np.abs(X_new[:, 0]) > GAP).all()
    # ... and no mode collapse: each cluster gets its half of the samples.
    assert abs((X_new[:, 0] < 0).mean() - 0.5) < 0.05
    # A huge threshold merges the clusters and does fill the gap: the test above can fail.
    wide = clone(fitted).set_params(angle_threshold=180.0).fit(clusters)
    assert (np.abs(wide.sample(3000, random_state=0)[:, 0]) < GAP).any()


@pytest.mark.parametrize("n_neighbors", [1, 3])
def test_samples_in_hull_of_neighbouring_targets(clusters, n_neighbors):
    X = _two_clusters(n=20, dim=3, seed=1)
    sampler = OTNetSampler(
        n_latent=2000,
        angle_threshold=20.0,
        n_neighbors=n_neighbors,
        transport=_transport(),
        random_state=0,
    ).fit(X)
    Z = np.random.default_rng(2).uniform(-1, 1, size=(300, 3))
    X_new, support, weights = sampler.generate(Z, return_support=True)
    assert support.shape == weights.shape == (300, 1 + n_neighbors)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert (weights >= 0).all()
    np.testing.assert_allclose(X_new, np.einsum("nk,nkd->nd", weights, sampler.target_[support]))
    # Independent check from heights_ and target_: the support is the point's own cell and
    # the next best cells by score, merged ones within the angle threshold, and the sample is
    # in the convex hull of the merged ones.
    Y = sampler.target_
    s = _scores(sampler, Z)
    order = np.argsort(-s, axis=1)[:, : 1 + n_neighbors]
    clear = np.sort(s, axis=1)[:, -1] - np.sort(s, axis=1)[:, -2] > 1e-6
    assert clear.mean() > 0.9
    assert (order[clear, 0] == support[clear, 0]).all()
    assert (np.sort(order[clear], axis=1) == np.sort(support[clear], axis=1)).all()
    interpolated = weights[:, 0] < 1
    assert interpolated.sum() > 10
    for i in np.flatnonzero(clear):
        merged = _angles(Y, order[i, 0], order[i, 1:]) < 20.0
        vertices = Y[np.append(order[i, 0], order[i, 1:][merged])]
        assert _in_hull(X_new[i], vertices), (i, X_new[i], vertices)
        assert weights[i, 0] >= 1.0 / (1 + n_neighbors) - 1e-12
    if n_neighbors == 1:
        # AE-OT's rule: on the segment from y_j towards y_k, at most half-way.
        assert (weights[:, 1] <= 0.5 + 1e-12).all()


def test_neighbours_and_gaps_match_float64_scores(fitted):
    """The neighbours and score gaps from the transport's kernels (float32) agree with the
    scores ``<z, y_k> + h_k`` recomputed here in float64 from ``heights_``."""
    Z = np.random.default_rng(3).uniform(-1, 1, size=(400, 2))
    Zp = fitted._place(Z)
    cells = fitted.transport_.predict_index(Zp)
    nbrs, gaps = fitted._neighbours(Zp, cells, 3)
    assert nbrs.shape == gaps.shape == (400, 3)
    assert (nbrs != cells[:, None]).all() and (gaps >= 0).all()
    s = _scores(fitted, Z)
    rows = np.arange(400)[:, None]
    expected = s[rows, cells[:, None]] - s[rows, nbrs]
    # float32 scores in the transport's standardised units: absolute error ~1e-6 here.
    np.testing.assert_allclose(gaps, np.maximum(expected, 0.0), atol=1e-5)
    ranked = np.argsort(-s, axis=1)
    clear = np.sort(s, axis=1)[:, -1] - np.sort(s, axis=1)[:, -2] > 1e-4
    assert (ranked[clear, 0] == cells[clear]).all()


class _TiedTransport:
    """Stands in for ``transport_``: fixed top cells and scores, as when several tie."""

    def __init__(self, scores, cells):
        self.scores, self.cells = scores, cells

    def _top_cells(self, X, k):
        return self.scores[:, :k], self.cells[:, :k]


def test_neighbours_drop_own_cell_under_ties(fitted):
    """The row's own cell is dropped wherever a tie ranks it; when more cells tie for the best
    score than were asked for, it may be missing and the last tied one is dropped."""
    sampler = clone(fitted)
    sampler.target_ = fitted.target_
    sampler.latent_scale_ = 2.0
    scores = np.array([[5.0, 5.0, 4.0, 3.0], [5.0, 4.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    top = np.array([[7, 2, 9, 1], [2, 4, 6, 8], [3, 4, 5, 6]])
    sampler.transport_ = _TiedTransport(scores, top)
    nbrs, gaps = sampler._neighbours(np.zeros((3, 2)), np.array([2, 2, 0]), 3)
    np.testing.assert_array_equal(nbrs, [[7, 9, 1], [4, 6, 8], [3, 4, 5]])
    # Gaps in latent units: the transport's gaps divided by latent_scale_.
    np.testing.assert_allclose(gaps, [[0.0, 0.5, 1.0], [0.5, 1.0, 1.5], [0.0, 0.0, 0.0]])


def test_determinism_by_seed(fitted, clusters):
    a = fitted.sample(200, random_state=3)
    b = fitted.sample(200, random_state=3)
    c = fitted.sample(200, random_state=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rs = np.random.RandomState(5)
    np.testing.assert_array_equal(
        fitted.sample(50, random_state=rs), fitted.sample(50, random_state=5)
    )
    again = clone(fitted).fit(clusters)
    np.testing.assert_array_equal(again.heights_, fitted.heights_)
    np.testing.assert_array_equal(again.sample(200, random_state=3), a)


def test_sobol_latent_sample_balances_cells(clusters):
    """The quasi-random latent sample gives cell masses closer to the weights on fresh draws."""
    fresh = np.random.default_rng(7).uniform(-1, 1, size=(20000, 2))
    errors = {}
    for how in ("sobol", "random"):
        sampler = OTNetSampler(
            n_latent=3000, latent_sampling=how, transport=_transport(), random_state=0
        ).fit(clusters)
        Zp = sampler.latent_shift_ + sampler.latent_scale_ * fresh
        masses = np.bincount(sampler.transport_.predict_index(Zp), minlength=len(clusters))
        errors[how] = 0.5 * np.abs(masses / len(fresh) - 1 / len(clusters)).sum()
    assert errors["sobol"] < errors["random"]


def test_gaussian_source_and_sample_weight(clusters):
    weight = np.where(clusters[:, 0] < 0, 3.0, 1.0)
    sampler = OTNetSampler(
        source="gaussian",
        n_latent=3000,
        latent_sampling="random",
        transport=_transport(),
        random_state=0,
    ).fit(clusters, sample_weight=weight)
    X_new = sampler.sample(2000, random_state=0)
    assert abs((X_new[:, 0] < 0).mean() - 0.75) < 0.05
    assert (np.abs(X_new[:, 0]) > GAP).all()


def test_sklearn_conventions(fitted, clusters):
    params = fitted.get_params(deep=True)
    assert params["transport__height"] == "vector"
    assert params["angle_threshold"] == 15.0
    copy = clone(fitted)
    assert not hasattr(copy, "transport_")
    assert copy.get_params()["n_latent"] == 3000
    # fit does not fit (or change) the transport passed as a parameter.
    assert not hasattr(fitted.transport, "target_")
    assert fitted.transport.random_state is None
    copy.set_params(transport__tol=0.05, angle_threshold=5.0)
    assert copy.transport.tol == 0.05 and copy.angle_threshold == 5.0
    # Pickling keeps the map, bit for bit.
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        restored.sample(100, random_state=0), fitted.sample(100, random_state=0)
    )


def test_errors(fitted, clusters):
    with pytest.raises(NotFittedError):
        OTNetSampler().sample(3)
    with pytest.raises(ValueError, match="n_latent"):
        OTNetSampler(n_latent=10, transport=_transport()).fit(clusters)
    with pytest.raises(ValueError, match="angle_threshold"):
        OTNetSampler(angle_threshold=-1.0).fit(clusters)
    with pytest.raises(ValueError, match="latent_sampling"):
        OTNetSampler(latent_sampling="halton").fit(clusters)
    with pytest.raises(ValueError, match="source"):
        OTNetSampler(source="cauchy").fit(clusters)
    with pytest.raises(ValueError, match="boundary_weight"):
        OTNetSampler(boundary_weight=0.7).fit(clusters)
    with pytest.raises(ValueError, match="n_neighbors"):
        OTNetSampler(n_neighbors=0).fit(clusters)
    with pytest.raises(ValueError, match="transport"):
        OTNetSampler(transport="ot").fit(clusters)
    for bad in (0, -3, 2.5, "10"):
        with pytest.raises(ValueError, match="n_samples"):
            fitted.sample(bad)
    with pytest.raises(ValueError, match="features"):
        fitted.generate(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        OTNetSampler(transport=_transport()).fit(np.full((5, 2), np.nan))


def _mixture(seed=0):
    """Four separated 2-D Gaussian clusters of unequal sizes, and each point's cluster."""
    rng = np.random.default_rng(seed)
    means = np.array([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    sizes = [100, 60, 50, 40]
    X = np.vstack([m + 0.6 * rng.normal(size=(s, 2)) for m, s in zip(means, sizes, strict=True)])
    return X, np.repeat(np.arange(4), sizes), means


@pytest.fixture(scope="module")
def default_mixture_sampler():
    X, labels, means = _mixture()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults fit without any warning
        sampler = OTNetSampler(random_state=0).fit(X)
    return sampler, X, labels, means


def test_defaults_copy_rate_and_no_bridging_on_a_2d_mixture(default_mixture_sampler):
    sampler, X, labels, means = default_mixture_sampler
    assert sampler.transport_.converged_
    assert sampler.angle_threshold_ == pytest.approx(1.5 * sampler.angle_percentiles_[50])
    Z = sampler._draw(np.random.RandomState(1), 4000, 2)
    X_new, support, weights = sampler.generate(Z, return_support=True)
    np.testing.assert_array_equal(X_new, sampler.generate(Z))
    # The "auto" thresholds: the global floor, raised per pair by the cells' own scales.
    thresholds = sampler._threshold(support[:, 0], support[:, 1:])
    assert thresholds.min() >= sampler.angle_threshold_
    assert sampler.angle_scales_.shape == (X.shape[0],)
    # The target: at most 10% exact copies of training points with the defaults.
    copies = (np.abs(X_new[:, None, :] - X[None]).max(axis=2) == 0).any(axis=1)
    assert copies.mean() <= 0.10, copies.mean()
    # No sample mixes training points of two clusters, and none lies in a gap.
    own = labels[support[:, 0]]
    assert not ((labels[support] != own[:, None]) & (weights > 0)).any()
    nearest_mean = np.linalg.norm(X_new[:, None, :] - means[None], axis=2).min(axis=1)
    assert nearest_mean.max() < 0.6 * 5
    # Each cluster keeps its share of the samples.
    shares = np.bincount(own, minlength=4) / len(own)
    np.testing.assert_allclose(shares, np.bincount(labels) / len(labels), atol=0.03)
