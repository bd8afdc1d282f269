"""Generation through the semi-discrete optimal transport map (AE-OT style sampling).

:class:`OTNetSampler` learns the optimal transport map from a simple latent source (uniform or
Gaussian) onto a point cloud with :class:`~skot.OTNetTransport`, and draws new points by
pushing fresh latent samples through it. The bare map only reproduces the training points;
interpolating between neighbouring power cells whose supporting planes meet at a small angle
produces new points that fill the support of the data but never bridge the gaps between its
modes (An, Guo, Lei, Luo, Yau, Gu, "AE-OT: a new generative model based on extended
semi-discrete optimal transport", ICLR 2020).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ._transport import OTNetTransport
from ._validation import _named, validate_X

__all__ = ["OTNetSampler", "AUTO_ANGLE_FACTOR", "AUTO_CELL_QUANTILE", "default_transport"]

#: ``angle_threshold="auto"`` merges cells ``j`` and ``k`` below this factor times the larger of
#: the median angle between a latent training point's cell and its second-best cell
#: (``angle_percentiles_[50]``) and the two cells' own lower quartiles (``angle_scales_``).
AUTO_ANGLE_FACTOR = 1.5

#: ``angle_scales_[j]``: this quantile of the angles met by the latent training points of cell j.
AUTO_CELL_QUANTILE = 0.25


def default_transport() -> OTNetTransport:
    """The transport :class:`OTNetSampler` uses when ``transport=None``.

    Free per-point heights (a sampler is refitted, not reused on other data) optimised by
    Adam with a step of 0.03, to a marginal error of 0.02. Newton steps (``solver="auto"``)
    can stall on well separated low-dimensional modes; see the generation page of the
    documentation.
    """
    return OTNetTransport(height="vector", solver="adam", height_learning_rate=3e-2, tol=2e-2)


class OTNetSampler(BaseEstimator):
    """Generative model: a semi-discrete OT map from a latent source, with AE-OT interpolation.

    ``fit(X)`` draws ``n_latent`` points from the latent source (in as many dimensions as
    ``X`` has features) and learns the optimal transport map from them onto the rows of ``X``
    with an :class:`~skot.OTNetTransport`: the latent space is cut into power cells
    ``W_j = {z : <z, y_j> + h_j >= <z, y_k> + h_k for all k}``, one per training point ``y_j``,
    each holding the point's share of the latent mass. ``sample`` draws fresh latent points
    and maps each one to its cell's training point, interpolated towards the neighbouring
    cells whose supporting planes meet its own at an angle below ``angle_threshold``.

    Parameters
    ----------
    source : {"uniform", "gaussian"}, default="uniform"
        Latent distribution: uniform on the cube ``[-1, 1]^d`` or standard normal in ``R^d``,
        where ``d`` is the number of features of ``X`` (the latent space has the data's
        dimension).
    n_latent : int, default=20000
        Number of latent points drawn to learn the map. Each cell receives about
        ``n_latent / n_samples`` of them, so use at least ten times the number of training
        points; fewer than ``n_samples`` is an error. The cells' masses under the latent
        distribution are only as accurate as this sample (see ``latent_sampling``).
    latent_sampling : {"sobol", "random"}, default="sobol"
        How the ``n_latent`` training points of the latent space are drawn: the first
        ``n_latent`` points of a scrambled Sobol' sequence (quasi-random, spreads the points
        more evenly, so the cells' masses under the latent distribution are closer to the
        training points' weights) or independent random draws. ``sample`` always draws
        independent points.
    angle_threshold : float or "auto", default="auto"
        In **degrees**, in ``[0, 180]``. Two neighbouring cells ``j`` and ``k`` are merged for
        interpolation when the angle between their supporting planes (normals ``(y_j, -1)``
        and ``(y_k, -1)``, with the data centred and scaled to unit root-mean-square radius)
        is strictly below it. ``0`` returns exact training points. ``"auto"``: a threshold
        per pair of cells that follows the data's spacing, ``AUTO_ANGLE_FACTOR`` (1.5) times
        the largest of the median angle between a latent training point's cell and its
        second-best cell (``angle_percentiles_[50]``, so at least ``angle_threshold_``) and
        the lower quartiles of the same angles within cell ``j`` and within cell ``k``
        (``angle_scales_``): where the data are sparse (the tails of a mode) the cells meet
        at larger angles and the threshold grows with them. See Notes.
    n_neighbors : int, default=8
        Number of neighbouring cells considered for each latent point: those with the next
        highest scores ``<z, y_k> + h_k`` after its own cell. ``1`` is AE-OT's rule (the
        second-best cell only); larger values interpolate towards several cells near a
        corner, which leaves fewer latent points without a merged neighbour (exact copies:
        on the digits' codes at the ``"auto"`` threshold, 11% with 2 neighbours, 6% with 4,
        2% with 8).
    boundary_weight : float, default=0.5
        In ``[0, 0.5]``: the weight a neighbouring training point receives for a latent point
        on the facet shared with it; the weight falls linearly to zero at the cell's
        barycentre. ``0.5`` makes the map continuous across merged facets; ``0`` disables
        interpolation.
    transport : OTNetTransport, default=None
        Unfitted estimator used to learn the map (cloned in ``fit``); ``None`` means
        ``default_transport()`` (free heights, Adam steps, ``tol=0.02``). When its
        ``random_state`` is ``None``, the clone gets a seed drawn from ``random_state``.
    random_state : int, RandomState instance or None, default=None
        Seeds the latent sample drawn in ``fit`` (and the transport, see above).

    Attributes
    ----------
    transport_ : OTNetTransport
        The fitted map onto the training points. Its input is the latent space moved onto the
        data, ``z -> latent_shift_ + latent_scale_ * z`` (see Notes).
    latent_shift_ : ndarray of shape (n_features,)
        Weighted mean of the training points.
    latent_scale_ : float
        Ratio of the root-mean-square radius of the training points to that of the source.
    target_ : ndarray of shape (n_targets, n_features)
        The training points (identical rows merged), ``transport_.target_``.
    heights_ : ndarray of shape (n_targets,)
        The heights ``h_j`` in latent coordinates, centred (latent point ``z`` lies in cell
        ``argmax_j <z, target_j> + heights_j``): ``transport_.heights_`` converted, see
        Notes. For reference; the sampler's own scores come from ``transport_``.
    latent_barycenters_ : ndarray of shape (n_targets, n_features)
        Mean of the latent training points in each cell (NaN for a cell that received none):
        the points of the latent space that map exactly onto the training points.
    cell_counts_ : ndarray of shape (n_targets,)
        Number of latent training points in each cell.
    angle_threshold_ : float
        The angle threshold used, in degrees: ``angle_threshold``, or with ``"auto"`` the
        smallest threshold of a pair, ``AUTO_ANGLE_FACTOR * angle_percentiles_[50]``.
    angle_scales_ : ndarray of shape (n_targets,)
        Per cell, the lower quartile (``AUTO_CELL_QUANTILE``) of the angle (degrees) between
        the cell and the second-best cell of its latent training points
        (``angle_percentiles_[50]`` for a cell that received none); used by ``"auto"``.
    angle_percentiles_ : ndarray of shape (101,)
        Percentiles 0, 1, ..., 100 of the angle (degrees) between the cell of each latent
        training point and its second-best cell: ``angle_threshold = angle_percentiles_[q]``
        merges the pairs met by about ``q`` percent of the latent mass.
    n_features_in_ : int
        Number of features of ``X`` (and dimension of the latent space).

    See Also
    --------
    OTNetTransport : the semi-discrete transport map used underneath.
    sklearn.mixture.GaussianMixture.sample, sklearn.neighbors.KernelDensity.sample :
        other generative models with the same ``sample`` method.

    Notes
    -----
    **Map and cells.** The Brenier potential is ``u(z) = max_j pi_j(z)`` with the supporting
    planes ``pi_j(z) = <z, y_j> + h_j``; its gradient sends cell ``W_j`` to ``y_j``. Two cells
    that touch share the facet ``{pi_j = pi_k}``, and the graphs of ``pi_j`` and ``pi_k`` in
    ``R^(d+1)`` have normals ``(y_j, -1)`` and ``(y_k, -1)``. The angle between them,
    ``theta_jk = 2 arcsin(|n_j - n_k| / 2)`` for the unit normals, measures the jump of the
    gradient across the facet: small when ``y_j`` and ``y_k`` are close (the facet is a regular
    part of the support), large across a gap between modes (a singularity of the map). It is
    computed after centring the training points at their weighted mean and scaling them to unit
    root-mean-square radius, so the threshold does not depend on the data's units; near the
    centre, two points at distance ``delta`` make an angle of about ``arctan(delta)``.

    **Placement.** An isotropic scaling and a translation of the source do not change the
    optimal map (the power cells move with the points, the heights change accordingly), so the
    latent sample is handed to the transport moved onto the data, with the same mean and
    root-mean-square radius: the solver then starts from a source and a target of the same
    size, whatever the data's units. ``heights_``, ``latent_barycenters_`` and the score gaps
    below are in latent coordinates: since ``<s + a z, y_j> + H_j = a (<z, y_j> + h_j)`` with
    ``h_j = (H_j + <s, y_j>) / a`` (``s = latent_shift_``, ``a = latent_scale_``), a score gap
    in latent units is the transport's gap divided by ``latent_scale_``.

    **Scores.** Every score ``<z, y_k> + h_k`` is computed by the fitted transport (its power
    cell kernels, on its device and in its float32 precision), never here: gaps carry an
    absolute error of about ``1e-7`` times the scores' magnitude, and a latent point within
    that of a facet may see its neighbours in either order.

    **Neighbours.** A latent point ``z`` lies in cell ``j`` (``transport_.predict_index``); its
    neighbouring cells are the ``n_neighbors`` cells ``k != j`` with the highest scores
    ``pi_k(z)``. For each, the score gap ``g_k(z) = pi_j(z) - pi_k(z) >= 0`` is proportional to
    the distance from ``z`` to the facet ``{pi_j = pi_k}``.

    **Interpolation.** A neighbour is merged when ``theta_jk`` is below the pair's threshold
    (``angle_threshold``, or with ``"auto"``
    ``1.5 * max(angle_percentiles_[50], angle_scales_[j], angle_scales_[k])``). Its raw
    weight is ``t_k = boundary_weight * max(0, 1 - g_k(z) / g_k(b_j))``, where ``b_j`` is the
    latent barycentre of cell ``j``: ``t_k`` equals ``boundary_weight`` on the facet and falls
    linearly to zero at the depth of the barycentre. With ``a_j = 1`` and
    ``a_k = t_k / (1 - t_k)`` for merged neighbours (``0`` otherwise), the generated point is
    ``sum_k a_k y_k / sum_k a_k``: with one merged neighbour exactly ``(1 - t_k) y_j + t_k y_k``.
    The result is always a convex combination of ``y_j`` and of merged neighbours, each within
    the threshold of ``y_j``, so it stays within their convex hull; a neighbour across a facet
    whose angle reaches the threshold gets no weight.
    The barycentre ``b_j`` maps to ``y_j``, and with ``boundary_weight = 0.5`` both sides of a
    merged facet map to the midpoint ``(y_j + y_k) / 2`` (with one neighbour). A latent point
    keeps ``y_j`` with weight at least ``1 / (1 + n_neighbors)``, so the mass of every cell, and
    therefore every mode's share, is preserved up to the interpolation.

    References
    ----------
    .. [1] An, Guo, Lei, Luo, Yau, Gu. "AE-OT: a new generative model based on extended
       semi-discrete optimal transport." ICLR, 2020.
    .. [2] Li, Li, Jin, Lei, Luo. "OT-Net: a reusable neural optimal transport solver."
       Machine Learning, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from skot import OTNetTransport
    >>> from skot.sampling import OTNetSampler
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(-4, 0.5, (50, 2)), rng.normal(4, 0.5, (50, 2))])
    >>> sampler = OTNetSampler(n_latent=3000, random_state=0)
    >>> X_new = sampler.fit(X).sample(1000, random_state=0)
    >>> X_new.shape
    (1000, 2)
    >>> bool((np.abs(X_new[:, 0]) > 2).all())  # nothing in the gap between the clusters
    True
    >>> sampler.set_params(angle_threshold=0)  # doctest: +ELLIPSIS
    OTNetSampler(...)
    >>> bool(np.isin(sampler.sample(5, random_state=0), X).all())  # copies only
    True
    """

    _parameter_constraints: dict = {
        "source": [StrOptions({"uniform", "gaussian"})],
        "n_latent": [Interval(Integral, 2, None, closed="left")],
        "latent_sampling": [StrOptions({"sobol", "random"})],
        "angle_threshold": [Interval(Real, 0, 180, closed="both"), StrOptions({"auto"})],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "boundary_weight": [Interval(Real, 0, 0.5, closed="both")],
        "transport": [HasMethods(["fit", "predict_index"]), None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        source="uniform",
        n_latent=20000,
        latent_sampling="sobol",
        angle_threshold="auto",
        n_neighbors=8,
        boundary_weight=0.5,
        transport=None,
        random_state=None,
    ):
        self.source = source
        self.n_latent = n_latent
        self.latent_sampling = latent_sampling
        self.angle_threshold = angle_threshold
        self.n_neighbors = n_neighbors
        self.boundary_weight = boundary_weight
        self.transport = transport
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, sample_weight=None):
        """Learn the transport map from the latent source onto the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training points, the support of the generated distribution.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the training points (their share of the latent mass);
            uniform by default.

        Returns
        -------
        self : OTNetSampler
            The fitted sampler.
        """
        X = validate_X(self, X, reset=True, ensure_min_samples=2)
        if sample_weight is not None:
            try:
                sample_weight = _check_sample_weight(
                    sample_weight, X, dtype=np.float64, ensure_non_negative=True
                )
            except (TypeError, ValueError) as exc:
                named = _named(exc, "sample_weight")
                if named is exc:
                    raise
                raise named from exc
            if not sample_weight.max() > 0:
                raise ValueError("sample_weight must not be all zero")
            sample_weight = sample_weight / sample_weight.max()  # no overflow in the sum
        if np.unique(X, axis=0).shape[0] < 2:
            raise ValueError(
                "X must contain at least 2 distinct rows (training points): a single point "
                "can only be copied"
            )
        if self.n_latent < X.shape[0]:
            raise ValueError(
                f"n_latent={self.n_latent} is smaller than the number of training points "
                f"({X.shape[0]}); every cell needs latent points (use at least 10 per point)"
            )
        rng = check_random_state(self.random_state)
        transport = default_transport() if self.transport is None else clone(self.transport)
        if "random_state" in transport.get_params() and transport.random_state is None:
            transport.set_params(random_state=int(rng.randint(np.iinfo(np.int32).max)))
        if self.latent_sampling == "sobol":
            Z = self._draw_sobol(rng, self.n_latent, X.shape[1])
        else:
            Z = self._draw(rng, self.n_latent, X.shape[1])
        # The transport sees the latent sample moved onto the data (same weighted mean, same
        # root-mean-square radius): an isotropic scaling and a translation of the source leave
        # the optimal map unchanged (the power cells move with it), and the solver starts from
        # a source and a target of the same size. Everything below is in latent coordinates.
        w = (
            np.full(X.shape[0], 1.0 / X.shape[0])
            if sample_weight is None
            else sample_weight / sample_weight.sum()
        )
        centre = w @ X
        with np.errstate(over="ignore", invalid="ignore"):
            spread = float(w @ ((X - centre) ** 2).sum(axis=1))
        if not np.isfinite(spread):
            raise ValueError(
                "X is too large: the squared distances between its rows overflow float64 "
                f"(largest |value| {np.abs(X).max():.3g}); rescale X"
            )
        radius = math.sqrt(spread)
        latent_radius = math.sqrt(X.shape[1] / 3 if self.source == "uniform" else X.shape[1])
        self.latent_shift_ = centre
        self.latent_scale_ = radius / latent_radius if radius > 0 else 1.0
        transport.fit(self._place(Z), X_target=X, target_weight=sample_weight)
        self.transport_ = transport
        self.target_ = np.asarray(transport.target_, dtype=np.float64)
        # <shift + scale z, y> + h = scale (<z, y> + (h + <shift, y>) / scale): latent heights.
        heights = np.asarray(transport.heights_, dtype=np.float64) + self.target_ @ centre
        self.heights_ = heights / self.latent_scale_
        self.heights_ -= self.heights_.mean()
        m = self.target_.shape[0]

        Z_placed = self._place(Z)
        cells = np.asarray(transport.predict_index(Z_placed))
        counts = np.bincount(cells, minlength=m)
        sums = np.zeros_like(self.target_)
        np.add.at(sums, cells, Z)
        bary = np.full_like(sums, np.nan)
        bary[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
        self.cell_counts_ = counts
        self.latent_barycenters_ = bary

        # Unit normals (y_j, -1) / |(y_j, -1)| of the supporting planes, in standardised units.
        w = np.asarray(transport.target_weight_, dtype=np.float64)
        centred = self.target_ - w @ self.target_
        radius = math.sqrt(float(w @ (centred**2).sum(axis=1)))
        centred /= radius if radius > 0 else 1.0
        normals = np.hstack([centred, -np.ones((m, 1))])
        self._normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)

        nbrs, _ = self._neighbours(Z_placed, cells, 1)
        angles = self._angles(cells[:, None], nbrs)[:, 0]
        self.angle_percentiles_ = np.percentile(angles, np.arange(101))
        # Per cell, an order statistic of its latent points' angles (sorted by cell, then angle).
        order = np.lexsort((angles, cells))
        starts = np.cumsum(counts) - counts
        rank = starts + np.floor(AUTO_CELL_QUANTILE * np.maximum(counts - 1, 0)).astype(int)
        scales = np.full(m, float(self.angle_percentiles_[50]))
        scales[counts > 0] = angles[order][rank[counts > 0]]
        self.angle_scales_ = scales
        self.angle_threshold_ = (
            min(180.0, AUTO_ANGLE_FACTOR * float(self.angle_percentiles_[50]))
            if self.angle_threshold == "auto"
            else float(self.angle_threshold)
        )
        return self

    def _threshold(self, cells, nbrs):
        """The angle threshold in degrees of each pair ``(cells[i], nbrs[i, k])``: the
        parameter's value when it is a number (also when set after ``fit``, between draws),
        else the ``"auto"`` rule (see ``angle_threshold``)."""
        if self.angle_threshold != "auto":
            return float(self.angle_threshold)
        pair = np.maximum(self.angle_scales_[cells][:, None], self.angle_scales_[nbrs])
        return np.maximum(self.angle_threshold_, AUTO_ANGLE_FACTOR * pair)

    def _place(self, Z) -> np.ndarray:
        """Latent coordinates to the transport's input space (see ``fit``)."""
        return self.latent_shift_ + self.latent_scale_ * Z

    def _draw_sobol(self, rng, n, d) -> np.ndarray:
        sobol = qmc.Sobol(d, scramble=True, seed=int(rng.randint(np.iinfo(np.int32).max)))
        u = sobol.random_base2(max(1, math.ceil(math.log2(n))))[:n]
        if self.source == "uniform":
            return 2.0 * u - 1.0
        return ndtri(np.clip(u, 1e-12, 1 - 1e-12))

    def _draw(self, rng, n, d) -> np.ndarray:
        if self.source == "uniform":
            return rng.uniform(-1.0, 1.0, size=(n, d))
        return rng.standard_normal(size=(n, d))

    # -------------------------------------------------------------- geometry
    def _neighbours(self, X, cells, k) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` cells after ``cells`` by score, best first, and their score gaps.

        ``X`` is in the transport's input space (``_place`` of latent points); the gaps are in
        latent units, clipped at zero.
        """
        n, k = X.shape[0], min(k, self.target_.shape[0] - 1)
        scores, top = self.transport_._top_cells(X, k + 1)
        # Drop each row's own cell: first unless tied with others, and absent only when more
        # than k + 1 cells tie for the best score (then drop the last one, also tied).
        own = top == cells[:, None]
        found = own.any(axis=1)
        own[~found, -1] = True
        own_score = np.where(found, scores[own], scores[:, 0])
        nbrs = top[~own].reshape(n, k)
        # Gaps in the transport's input units, divided by latent_scale_: latent units.
        gaps = (own_score[:, None] - scores[~own].reshape(n, k)) / self.latent_scale_
        return nbrs, np.maximum(gaps, 0.0)

    def _angles(self, a, b) -> np.ndarray:
        """Angle in degrees between the supporting planes of cells ``a`` and ``b``."""
        chord = np.linalg.norm(self._normals[a] - self._normals[b], axis=-1)
        return np.degrees(2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)))

    # ------------------------------------------------------------ generation
    def generate(self, Z, return_support=False):
        """Map latent points to generated points (the interpolated map; see Notes).

        Parameters
        ----------
        Z : array-like of shape (n_points, n_features)
            Points of the latent space (same dimension as the training data).
        return_support : bool, default=False
            Also return the training points each generated point combines, and the weights.

        Returns
        -------
        X_new : ndarray of shape (n_points, n_features)
            Generated points (float64).
        indices : ndarray of shape (n_points, 1 + n_neighbors)
            Only with ``return_support``: rows of ``target_`` combined, the point's own cell
            first, then its neighbouring cells by decreasing score (``n_neighbors`` of them, at
            most ``n_targets - 1``).
        weights : ndarray of shape (n_points, 1 + n_neighbors)
            Only with ``return_support``: non-negative weights summing to one (zero for
            neighbours that are not merged), ``X_new = sum_k weights_k target_[indices_k]``.
        """
        check_is_fitted(self)
        Z = validate_data(self, Z, reset=False, dtype=np.float64)
        Z_placed = self._place(Z)
        cells = np.asarray(self.transport_.predict_index(Z_placed))
        nbrs, gaps = self._neighbours(Z_placed, cells, self.n_neighbors)
        support = np.hstack([cells[:, None], nbrs])
        merged = self._angles(cells[:, None], nbrs) < self._threshold(cells, nbrs)
        # Score gap of the cell's latent barycentre to each neighbour: the interpolation depth.
        depth = np.full(nbrs.shape, np.nan)
        occupied = self.cell_counts_[cells] > 0
        if occupied.any():
            B = self._place(self.latent_barycenters_[cells[occupied]])
            s = self.transport_._scores_at(B, support[occupied])
            depth[occupied] = (s[:, :1] - s[:, 1:]) / self.latent_scale_
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.boundary_weight * np.clip(1.0 - gaps / depth, 0.0, 1.0)
        t = np.where(merged & (depth > 0), t, 0.0)
        a = np.hstack([np.ones((Z.shape[0], 1)), t / (1.0 - t)])
        weights = a / a.sum(axis=1, keepdims=True)
        X_new = np.einsum("nk,nkd->nd", weights, self.target_[support])
        # Exact copies where nothing is merged (no rounding from the weighted sum).
        plain = weights[:, 0] == 1.0
        X_new[plain] = self.target_[cells[plain]]
        if return_support:
            return X_new, support, weights
        return X_new

    def sample(self, n_samples=1, random_state=None):
        """Generate new points: fresh latent samples pushed through :meth:`generate`.

        Parameters
        ----------
        n_samples : int, default=1
            Number of points to generate.
        random_state : int, RandomState instance or None, default=None
            Seeds the latent draws (``None``: NumPy's global generator, as in scikit-learn's
            ``sample`` methods). The same seed gives the same points.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features)
            Generated points (float64).
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        rng = check_random_state(random_state)
        Z = self._draw(rng, int(n_samples), self.n_features_in_)
        return self.generate(Z)
