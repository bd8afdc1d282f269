"""Transport problems with a known answer, built from a seed.

Each returns a :class:`GroundTruth`: training source samples, the target point cloud every
method receives (possibly with repeated points, i.e. a weighted cloud), fresh test points and
their true images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "GroundTruth",
    "gaussian_to_gaussian",
    "gaussian_to_mixture",
    "max_affine",
    "nearest_index",
]


@dataclass
class GroundTruth:
    """A problem with its answer on test points.

    Attributes
    ----------
    name : str
        Short description.
    X_train : ndarray of shape (n, d)
        Source samples given to every method.
    X_target : ndarray of shape (m, d)
        Target points given to every method (rows may repeat: a weighted cloud).
    X_test : ndarray of shape (k, d)
        Fresh source points the fitted maps are evaluated on.
    T_test : ndarray of shape (k, d)
        True images of ``X_test``.
    reference : str
        What ``T_test`` is (closed form, exact map, or exact OT of the test sample).
    support, weights : ndarray, optional
        The exact push-forward ``T#mu`` (distinct points and their masses) when known.
    target_weight : ndarray of shape (m,), optional
        Weights of the rows of ``X_target`` given to every method with them (``None``:
        uniform, i.e. the frequencies of repeated rows).
    """

    name: str
    X_train: np.ndarray
    X_target: np.ndarray
    X_test: np.ndarray
    T_test: np.ndarray
    reference: str
    support: np.ndarray | None = None
    weights: np.ndarray | None = None
    target_weight: np.ndarray | None = None

    @property
    def target_variance(self) -> float:
        """``E|T(x) - E T(x)|^2``: the variance of the target distribution (test estimate)."""
        return float(((self.T_test - self.T_test.mean(axis=0)) ** 2).sum(axis=1).mean())

    @property
    def target_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct target points and their weights (``support`` and ``weights`` when the
        exact push-forward is known, else the frequencies in ``X_target``)."""
        if self.support is not None and self.weights is not None:
            return self.support, self.weights
        pts, counts = np.unique(self.X_target, axis=0, return_counts=True)
        return pts, counts / counts.sum()


def nearest_index(X: np.ndarray, Y: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of the nearest row of ``Y`` for every row of ``X`` (chunked)."""
    yy = (Y**2).sum(axis=1)
    out = np.empty(X.shape[0], dtype=np.int64)
    for i in range(0, X.shape[0], chunk):
        out[i : i + chunk] = np.argmin(yy[None, :] - 2 * X[i : i + chunk] @ Y.T, axis=1)
    return out


def _sqrtm(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(S)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


def _random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    A = rng.normal(size=(d, d)) / np.sqrt(d)
    return A @ A.T + 0.3 * np.eye(d)


def gaussian_to_gaussian(d: int, n: int, m: int, k: int, seed: int = 0) -> GroundTruth:
    """``N(0, S1) -> N(mu, S2)``: the Brenier map is linear, ``T(x) = mu + A x``.

    ``A = S1^-1/2 (S1^1/2 S2 S1^1/2)^1/2 S1^-1/2``. The target cloud is ``m`` samples of
    ``N(mu, S2)``, so a semi-discrete map can only reach ``T`` up to the quantisation of the
    target by ``m`` points: that floor is shared by every method.
    """
    rng = np.random.default_rng(seed)
    S1, S2 = _random_spd(d, rng), _random_spd(d, rng)
    mu = rng.normal(size=d)
    R1 = _sqrtm(S1)
    R1i = np.linalg.inv(R1)
    A = R1i @ _sqrtm(R1 @ S2 @ R1) @ R1i
    L1 = np.linalg.cholesky(S1)

    def draw(size: int) -> np.ndarray:
        return rng.normal(size=(size, d)) @ L1.T

    X_train, X_test = draw(n), draw(k)
    X_target = mu + draw(m) @ A.T
    return GroundTruth(
        f"Gaussian to Gaussian, d={d}",
        X_train,
        X_target,
        X_test,
        mu + X_test @ A.T,
        "closed-form linear map",
    )


def max_affine(
    d: int,
    n_pieces: int,
    n: int,
    m: int,
    k: int,
    seed: int = 0,
    weight_samples: int = 0,
    weighted_target: bool = False,
) -> GroundTruth:
    """Source ``N(0, I)``, map ``T = grad u`` with ``u(x) = max_k <a_k, x> + b_k``.

    ``T`` is piecewise constant and discontinuous: it sends each power cell of ``(a_k, b_k)`` to
    ``a_k``, and it is the optimal map onto ``T#mu`` because it is the gradient of a convex
    function (Brenier). The target cloud is ``T`` of ``m`` fresh source samples: the points
    ``a_k`` repeated in proportion to their cells' masses. With ``weight_samples > 0`` the
    exact push-forward is also estimated from that many source draws (in chunks) and stored
    as ``support`` / ``weights`` (pieces of zero mass dropped).

    ``T`` is the optimal map onto the exact push-forward only: onto the ``m`` sampled points
    (weights off by about ``sqrt(w (1 - w) / m)`` each) the optimal map moves the cell borders,
    and every method is charged for that. ``weighted_target=True`` (with ``weight_samples``)
    gives the methods the exact push-forward instead: ``X_target = support`` with
    ``target_weight = weights``, a weighted point cloud whose optimal map is ``T``.
    """
    if weighted_target and weight_samples <= 0:
        raise ValueError("weighted_target=True needs weight_samples > 0")
    rng = np.random.default_rng(seed)
    a = 1.5 * rng.normal(size=(n_pieces, d))
    b = -0.5 * (a**2).sum(axis=1) + 0.3 * rng.normal(size=n_pieces)

    def T(X: np.ndarray) -> np.ndarray:
        return a[np.argmax(X @ a.T + b, axis=1)]

    X_train, X_test = rng.normal(size=(n, d)), rng.normal(size=(k, d))
    X_target = T(rng.normal(size=(m, d)))
    support = weights = target_weight = None
    if weight_samples > 0:
        counts = np.zeros(n_pieces)
        for start in range(0, weight_samples, 500_000):
            Z = rng.normal(size=(min(500_000, weight_samples - start), d))
            counts += np.bincount(np.argmax(Z @ a.T + b, axis=1), minlength=n_pieces)
        keep = counts > 0
        support, weights = a[keep], counts[keep] / counts.sum()
        if weighted_target:
            X_target, target_weight = support, weights
    return GroundTruth(
        f"max-affine gradient map, d={d}, {n_pieces} pieces",
        X_train,
        X_target,
        X_test,
        T(X_test),
        "exact (discontinuous) map",
        support,
        weights,
        target_weight,
    )


def gaussian_to_mixture(d: int, n_modes: int, n: int, m: int, k: int, seed: int = 0) -> GroundTruth:
    """Source ``N(0, I)`` onto ``m`` samples of well-separated Gaussians (std 0.3, centres 4
    apart on average).

    No closed form: the reference is the exact optimal assignment (``ot.emd``) between the
    ``k`` test points and the ``m`` target points, as a barycentric map, which converges to the
    semi-discrete map as ``k / m`` grows. Needs POT.
    """
    import ot

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_modes, d))
    centres *= 4.0 / np.sqrt(2 * d)
    modes = rng.integers(n_modes, size=m)
    X_target = centres[modes] + 0.3 * rng.normal(size=(m, d))
    X_train, X_test = rng.normal(size=(n, d)), rng.normal(size=(k, d))
    M = ot.dist(X_test, X_target)
    P = ot.emd(np.full(k, 1.0 / k), np.full(m, 1.0 / m), M, numItermax=10**8)
    T_test = (P @ X_target) * k
    return GroundTruth(
        f"Gaussian to {n_modes}-mode mixture, d={d}",
        X_train,
        X_target,
        X_test,
        T_test,
        f"exact OT (ot.emd) of the {k} test points onto the {m} targets",
    )
