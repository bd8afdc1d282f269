"""``OTNetTransport``: the scikit-learn estimator around the torch solver.

This is the one module where scikit-learn meets torch: validation, device resolution,
NumPy <-> tensor conversion, the fitted attributes and pickling.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _solver, _stream
from ._atoms import SourceAtoms, StopAtFloor
from ._cells import FittedCellsMixin
from ._distributed import LOCAL, process_group
from ._potentials import HEIGHT_KINDS, initial_height_model
from ._reuse import carry_over_heights, heights_for, residual_for
from ._snapshot import state_from_dict, state_to_dict
from ._validation import (
    _check_array_named,
    _check_target_ids,
    _check_weights,
    check_fit_y,
    check_hidden_layer_sizes,
    check_range,
    check_replicated,
    resolve_device,
    standardization,
    validate_distributed_inputs,
    validate_fit_inputs,
    validate_X,
)
from .callbacks import chain_callbacks

__all__ = ["OTNetTransport"]

_DTYPE = torch.float32
#: Below this many samples per target point a ``ConvergenceWarning`` names the assignment
#: regime, where float32 scores cannot carry an exact matching past about 1,000 points.
_FEW_SAMPLES_PER_TARGET = 10


class OTNetTransport(FittedCellsMixin, OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Semi-discrete optimal transport map learned by OT-Net.

    Learns the quadratic-cost optimal transport map from a source distribution, given by the
    samples ``X``, onto a weighted point cloud ``X_target``. The map is the gradient of
    Brenier's potential ``u(x) = max_j <x, y_j> + h_j``: every point goes to the target point
    whose power cell contains it, so the map is sharp and piecewise constant. The heights
    ``h_j`` come from a free vector, a neural network evaluated on the target points (OT-Net,
    reusable on changed targets), or both.

    Parameters
    ----------
    height : {"residual", "network", "vector"}, default="residual"
        Height parameterisation. ``"residual"``: OT-Net's network plus a free residual per
        point, ``h_j = f_theta(y_j) + r_j``; where Newton steps apply the residuals are solved
        as free heights (the fastest exact solver) and the network then learns the smooth dual
        potential from them in closed form, so new or moved target points get their heights
        from it at once (:meth:`predict_heights`, warm starts). ``"network"``:
        ``h_j = f_theta(y_j)`` alone, trained by Adam (OT-Net as published). ``"vector"``: one
        free height per point, no network (the classic solver).
    hidden_layer_sizes : tuple of int, default=(256, 256)
        Widths of the height network's hidden layers (positive integers; validated whatever
        ``height``, as scikit-learn's MLP does).
    fourier_scale : float, default=0.2
        Random Fourier features of the network input, with frequencies of standard deviation
        ``fourier_scale / s`` where ``s`` is the typical spacing between target points. Lets
        the network follow heights that vary from one target to the next. ``0`` disables them.
        For ``"residual"`` heights this is the highest frequency: the network's fit to the
        trained heights picks a fraction of it (down to 1/40) by cross-validation.
    init : {"gaussian", "voronoi"}, default="gaussian"
        Starting map. ``"gaussian"`` starts from the optimal affine map between Gaussians with
        the means and covariances of source and target (closed form), so that large shifts and
        scalings cost no iterations; ``"voronoi"`` starts from the nearest-target map.
    solver : {"auto", "newton", "adam"}, default="auto"
        How the heights are optimised. ``"adam"``: Adam steps on Monte Carlo batches that
        grow to the whole sample (any ``height``). ``"newton"``: damped Newton steps on the
        free per-point heights over the whole sample from the first step (``height`` in
        ``{"vector", "residual"}``, ``epsilon=0``, ``bandwidth=0``); each step is one pass over
        the sample plus a sparse linear solve, and a few tens of steps reach ``tol``.
        ``"auto"``: Newton steps wherever they apply, once the batch is the whole sample
        (whatever the number of samples per target point, down to an assignment of as many
        samples as targets); free heights start there when the sample has at most 10^6
        points.
        ``partial_fit`` from scratch with free heights takes Newton steps on the stream's
        buffer; otherwise Adam or averaged steps.
    max_iter : int, default=2000
        Maximum number of optimisation steps per call to ``fit``.
    tol : float, default=1e-2
        Stop when the marginal error (total variation between the cell masses and the target
        weights, measured on the whole training sample) is at most ``tol``.
    batch_size : int, default=4096
        Initial number of Monte Carlo source samples per step. It doubles when progress
        stalls, up to the whole sample (``max_batch_size``), where steps become exact.
    max_batch_size : int, default=None
        Cap on the batch growth when ``bandwidth > 0``; ``None`` means one million.
    learning_rate : float, default=1e-3
        Adam's initial step size for the height network's weights. It halves when progress
        stalls at the largest batch (down to ``2**-10`` of its initial value).
    height_learning_rate : float, default=1e-2
        Adam's initial step size for free per-point heights (``"vector"`` and the residual of
        ``"residual"``), in units of the standardised data. Halves like ``learning_rate``.
    n_iter_no_change : int, default=3
        Evaluations without a 1% improvement of the marginal error before the batch grows or
        the learning rate halves.
    epsilon : float, default=0.0
        Entropic smoothing (in standardised units, see ``scale_``). ``0`` gives the hard map;
        ``epsilon > 0`` replaces the max by a log-sum-exp and the map by a softmax-weighted
        mean of targets.
    bandwidth : float, default=0.0
        Gaussian kernel smoothing of the source sample (in standardised units): the source
        becomes a measure with a density, sampled afresh at every step.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, or the
        equivalent ``torch.device``.
    distributed : {False, True, "data", "targets"}, default=False
        ``fit`` over the default ``torch.distributed`` process group (initialised by the
        caller, e.g. under ``torchrun``); every rank ends with the same fitted estimator.
        ``True`` or ``"data"``: data parallel, every rank calls ``fit`` with its own rows as
        ``X`` (any number, even none; ``sample_weight`` for them) and the same ``X_target``;
        the result is that of one process fitting the union of the rows (up to the order of
        float sums). Cell masses, energies, barycentre sums and the Newton Hessian's products
        are all-reduced; each rank draws its Monte Carlo batches from its own rows.
        ``"targets"``: target sharded, every rank passes the same ``X`` and ``X_target`` and
        scores only its slice of the targets in each full pass (the rows' best cells are
        all-gathered), for many targets. ``transform`` needs no process group, and a pickled
        estimator is an ordinary one. ``partial_fit`` and ``fit_stream`` are one process
        only. See the user guide's "Multi-GPU and multi-node" page.
    warm_start : bool, default=False
        Whether ``fit`` continues from the previous solution instead of starting afresh.
        A fit by Newton steps then also keeps each training row's best cells (16 per row,
        about 128 bytes, and a reference to the standardised rows) in memory, not in a
        pickle: a refit on the same rows, with a changed target, starts from them instead of
        a full pass over the sample.
    random_state : int, RandomState instance or None, default=None
        Seeds the network initialisation and the Monte Carlo batches.
    verbose : int, default=0
        ``0`` is silent; ``1`` or more prints one line per evaluation.
    callbacks : list of callable, default=None
        Called after every evaluation as ``callback(estimator, record)``, with ``record`` a
        :class:`~skot.callbacks.StepRecord` (step, marginal error, energy, batch size,
        learning rate, temperature, seconds); a true return value stops the fit (without a
        ``ConvergenceWarning``). A callback with ``on_fit_begin(estimator, max_steps)`` or
        ``on_fit_end(estimator)`` methods is also told when each fit starts and ends.
        :mod:`skot.callbacks` has a progress bar and a time budget.

    Attributes
    ----------
    target_ : ndarray of shape (n_targets, n_features)
        The target points (identical points of ``X_target`` merged).
    target_weight_ : ndarray of shape (n_targets,)
        Their weights, summing to one.
    heights_ : ndarray of shape (n_targets,)
        Heights ``h_j`` in the input's units: ``transform(x) = target_[argmax_j <x, target_j>
        + heights_j]``.
    barycenters_ : ndarray of shape (n_targets, n_features)
        Mean of the training samples in each cell (the target point itself for empty cells):
        the inverse map.
    potential_ : torch.nn.Module
        The trained height model (in standardised coordinates).
    center_ : ndarray of shape (n_features,)
        Centre of the internal standardisation ``x' = (x - center_) / scale_`` (the source
        mean), shared by source and target.
    scale_ : float
        Its scale. ``epsilon``, ``bandwidth`` and the height step size are in these
        standardised units: ``epsilon * scale_**2`` is the temperature in the input's units.
    device_ : torch.device
        Where the model lives.
    n_iter_ : int
        Optimisation steps taken over all calls.
    converged_ : bool
        Whether the last call reached ``tol``.
    marginal_error_ : float
        Marginal error (total variation) of the final map on the training sample (after
        ``partial_fit``: of the running cell counts over the stream, an estimate).
    n_samples_seen_ : int
        Source rows behind the map: the training sample of the last ``fit`` plus every row
        given to ``partial_fit`` since.
    loss_curve_ : list of float
        Energy ``E(h)`` (Monte Carlo estimate, standardised units) at every step.
    marginal_error_curve_ : list of (int, float)
        ``(step, marginal error)`` at every evaluation.
    n_features_in_ : int
        Number of features seen during ``fit``.

    See Also
    --------
    sklearn.neighbors.NearestNeighbors : the ``heights = -|y|^2 / 2`` special case (Voronoi).

    Notes
    -----
    The heights minimise the convex energy ``E(h) = E_x[max_j <x, y_j> + h_j] - sum_j nu_j
    h_j``, whose gradient is ``(mass of cell j) - nu_j``. Every step costs one matrix product
    and a row argmax over targets processed in chunks, so memory never grows with the number of
    targets times the number of samples. Data are standardised internally (one centre, one
    scale for source and target), which leaves the map unchanged.

    References
    ----------
    .. [1] Li, Li, Jin, Lei, Luo. "OT-Net: a reusable neural optimal transport solver."
       Machine Learning, 2024.
    .. [2] Gu, Luo, Sun, Yau. "Variational principles for Minkowski type problems, discrete
       optimal transport, and discrete Monge-Ampere equations." 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from skot import OTNetTransport
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 2))
    >>> Y = np.array([[-2.0, 0.0], [2.0, 0.0]])
    >>> ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    >>> ot.converged_
    True
    >>> ot.transform([[-1.0, 0.3], [3.0, 1.0]])
    array([[-2.,  0.],
           [ 2.,  0.]])
    """

    __metadata_request__fit = {"X_target": True}
    __metadata_request__partial_fit = {"X_target": True}

    _parameter_constraints: dict = {
        "height": [StrOptions(set(HEIGHT_KINDS))],
        "hidden_layer_sizes": ["array-like"],
        "fourier_scale": [Interval(Real, 0, None, closed="left")],
        "init": [StrOptions({"gaussian", "voronoi"})],
        "solver": [StrOptions({"auto", "newton", "adam"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "height_learning_rate": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="left")],
        "bandwidth": [Interval(Real, 0, None, closed="left")],
        "device": [str, torch.device],
        "distributed": ["boolean", StrOptions({"data", "targets"})],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callbacks": [list, tuple, None],
    }

    def __init__(
        self,
        height="residual",
        hidden_layer_sizes=(256, 256),
        fourier_scale=0.2,
        init="gaussian",
        solver="auto",
        max_iter=2000,
        tol=1e-2,
        batch_size=4096,
        max_batch_size=None,
        learning_rate=1e-3,
        height_learning_rate=1e-2,
        n_iter_no_change=3,
        epsilon=0.0,
        bandwidth=0.0,
        device="auto",
        distributed=False,
        warm_start=False,
        random_state=None,
        verbose=0,
        callbacks=None,
    ):
        self.height = height
        self.hidden_layer_sizes = hidden_layer_sizes
        self.fourier_scale = fourier_scale
        self.init = init
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.max_batch_size = max_batch_size
        self.learning_rate = learning_rate
        self.height_learning_rate = height_learning_rate
        self.n_iter_no_change = n_iter_no_change
        self.epsilon = epsilon
        self.bandwidth = bandwidth
        self.device = device
        self.distributed = distributed
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X, y=None, *, X_target=None, sample_weight=None, target_weight=None, target_ids=None
    ):
        """Learn the transport map from the samples ``X`` onto ``X_target``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source samples.
        y : None
            Ignored.
        X_target : array-like of shape (n_targets, n_features), default=None
            Target points. ``None`` maps ``X`` onto itself (the identity map). Requested by
            metadata routing by default, so meta-estimators route it to ``fit``.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the source samples.
        target_weight : array-like of shape (n_targets,), default=None
            Non-negative weights of the target points (uniform by default; with
            ``X_target=None``, ``sample_weight``).
        target_ids : array-like of shape (n_targets,), default=None
            Unique identifiers of the target points. On a warm start (``warm_start=True``)
            onto a changed target, points with the same id as in the previous call keep their
            trained per-point heights even if they moved; without ids on both calls, points
            are matched by exact coordinates. Points without a match start from their
            neighbours' heights.

        Returns
        -------
        self : OTNetTransport
            The fitted estimator.
        """
        check_fit_y(y)
        incremental = self.warm_start and hasattr(self, "_state")
        return self._fit(
            X,
            X_target,
            sample_weight,
            target_weight,
            target_ids,
            incremental=incremental,
            max_steps=self.max_iter,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(
        self, X, y=None, *, X_target=None, sample_weight=None, target_weight=None, target_ids=None
    ):
        """Continue training on the source batch ``X``, never re-initialising.

        One pass over ``X`` in batches of ``batch_size`` rows, each an averaged stochastic
        gradient step once the map has converged: Adam's step sizes decay as
        ``sqrt(batch_size / n_samples_seen_)`` and the map is the running average of the
        iterates, each weighted by its rows. After a converged ``fit`` (whose sample counts as
        rows seen) the stream continues from that map by ever smaller steps, so fresh data
        from the same distribution does not make it worse, and more data than any one sample
        makes it better. With free heights only they move (a network, learnt from them,
        stays). From scratch, free heights (``"vector"``, ``"residual"``; ``epsilon=0``, no
        ``bandwidth``) keep the stream's rows in a buffer, solved by Newton steps each time it
        has doubled (from 10 rows per target on), so the map is that of a fit on most of the
        rows seen; at 10^6 rows it is solved a last time and dropped, and averaged steps go on
        from there. Otherwise, before the map has converged, the batches take Adam steps with
        the fit's adaptive schedule. The first call initialises the model; later calls keep it.
        ``barycenters_`` and ``marginal_error_`` accumulate over every row seen (the
        marginal error is then an estimate over the stream, each row counted in the cell it
        fell in when seen). A new ``X_target`` starts from the trained heights (``f_theta``
        of the new points for the network, kept residuals for unchanged points) and a new
        stream.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A batch of source samples.
        y : None
            Ignored.
        X_target : array-like of shape (n_targets, n_features), default=None
            Target points. Required on the first call unless ``X`` should map onto itself;
            ``None`` later keeps the current target.
        sample_weight, target_weight, target_ids : array-like, default=None
            As in :meth:`fit`.

        Returns
        -------
        self : OTNetTransport
            The updated estimator.
        """
        check_fit_y(y)
        return self._fit(
            X,
            X_target,
            sample_weight,
            target_weight,
            target_ids,
            incremental=hasattr(self, "_state"),
            max_steps=None,
        )

    def fit_stream(
        self,
        source,
        *,
        X_target=None,
        target_weight=None,
        target_ids=None,
        batch_size=None,
        max_samples=None,
        max_time=None,
    ):
        """Learn the map from a stream of source samples: a sampler or an iterable of batches.

        The torch-side convenience over :meth:`partial_fit`, which is the primitive: the
        model is initialised as by :meth:`fit` (unless ``warm_start``), then every batch of
        the source is given to :meth:`partial_fit` until the source ends, ``max_samples`` rows
        have been seen or ``max_time`` seconds have passed. Memory is bounded by two batches
        (one is read ahead, so that the last is known and solves the stream's buffer) plus, for
        free heights before the map has converged, the buffer of at most 10^6 rows (see the
        Streams page). Every batch must be a 2-D array of numbers with the first batch's number
        of features and dtype (batches are not cast), finite, and a sampler must return the
        rows asked for; otherwise a ``ValueError`` or ``TypeError`` names the source and the
        batch.

        Parameters
        ----------
        source : callable, iterable or torch.utils.data.DataLoader
            A sampler ``source(n, rng)`` returning ``n`` fresh source rows as an array of shape
            ``(n, n_features)`` (``rng`` is a :class:`numpy.random.Generator` seeded from
            ``random_state``), or an iterable of batches (arrays, tensors, or tuples whose
            first element is the batch, as a ``DataLoader`` yields).
        X_target : array-like of shape (n_targets, n_features), default=None
            Target points, as in :meth:`fit`.
        target_weight, target_ids : array-like, default=None
            As in :meth:`fit`.
        batch_size : int, default=None
            Rows drawn per call of a sampler (``None``: the estimator's ``batch_size``).
            Ignored for iterables, whose batches are used as they come.
        max_samples : int, default=None
            Stop after this many rows. Required for a sampler unless ``max_time`` is given.
        max_time : float, default=None
            Stop after this many seconds (checked between batches).

        Returns
        -------
        self : OTNetTransport
            The fitted estimator.

        Examples
        --------
        >>> import numpy as np
        >>> from skot import OTNetTransport
        >>> def sampler(n, rng):
        ...     return rng.normal(size=(n, 2))
        >>> Y = np.random.default_rng(1).normal(size=(20, 2))
        >>> ot = OTNetTransport(height="vector", random_state=0)
        >>> ot = ot.fit_stream(sampler, X_target=Y, batch_size=1000, max_samples=5000)
        >>> ot.n_samples_seen_
        5000
        """
        from ._sources import fit_stream

        return fit_stream(
            self,
            source,
            X_target=X_target,
            target_weight=target_weight,
            target_ids=target_ids,
            batch_size=batch_size,
            max_samples=max_samples,
            max_time=max_time,
        )

    def _fit(
        self,
        X,
        X_target,
        sample_weight,
        target_weight,
        target_ids,
        *,
        incremental,
        max_steps,
        heights=None,
    ):
        """Shared by ``fit`` and ``partial_fit`` (``max_steps=None``: one pass over ``X``).

        ``heights`` (fresh fits only): a function of ``target_`` (input units, after
        duplicates merged) giving the starting heights, e.g. from an exact solver's duals;
        with ``max_steps=0`` the fitted attributes are those heights' power diagram, from
        one pass over ``X``.

        Everything that can fail on bad input runs before the estimator changes: an error
        there leaves a fitted estimator exactly as it was. Once the solver runs, an error or an
        interruption (``KeyboardInterrupt``) leaves the attributes of the last finite state.
        """
        one_pass = max_steps is None
        if one_pass and self.distributed:
            raise ValueError(
                "partial_fit and fit_stream run in one process: distributed=True is for fit "
                "(each rank's rows in one call); set distributed=False to stream"
            )
        group = process_group(self.distributed)
        config = self._config()
        if one_pass:
            # A batch of a stream is not the whole sample: no Newton steps on it (the stream's
            # buffer of rows may take them, see _stream).
            config = dataclasses.replace(config, solver="adam")
        _solver.check_solver(self.height != "network", config, self.bandwidth)
        check_hidden_layer_sizes(self.hidden_layer_sizes)
        saved = dict(self.__dict__)
        try:
            # With several ranks, each check's outcome is agreed on (``group.agree``) before
            # the next collective: an error on one rank is an error on all.
            if group.splits_rows:
                X, mu, Y, nu, ids, center, scale = validate_distributed_inputs(
                    self, group, X, X_target, sample_weight, target_weight, target_ids
                )
            else:
                error = None
                try:
                    X, mu, Y, nu, ids = validate_fit_inputs(
                        self,
                        X,
                        X_target,
                        sample_weight,
                        target_weight,
                        target_ids,
                        reset=not incremental,
                    )
                except Exception as exc:
                    error = exc
                group.agree(error)
                if group.distributed:
                    check_replicated(
                        group,
                        {"X": X, "sample_weight": mu, "X_target": Y, "target_weight": nu},
                        'with distributed="targets" every rank passes the same data (each '
                        "scores its own slice of the targets)",
                    )
            error = None
            try:
                if incremental:
                    device = self.device_
                    check_range(X, self.center_, self.scale_, "X", fitted=True)
                    if Y is not None:
                        check_range(Y, self.center_, self.scale_, "X_target", fitted=True)
                else:
                    device = resolve_device(self.device)
                    if not group.splits_rows:
                        center, scale = standardization(X, mu, Y, nu)
            except Exception as exc:
                error = exc
            group.agree(error)
            atoms = None
            # The atoms of a union of rows held by several ranks are not known to any of them.
            if not one_pass and self.bandwidth == 0 and self.epsilon == 0 and not group.splits_rows:
                atoms = SourceAtoms.of(X, mu, self.target_weight_ if Y is None else nu)
            if not incremental:
                for attr in ("_state", "target_"):
                    self.__dict__.pop(attr, None)
                self.device_ = device
                self.center_, self.scale_ = center, scale
                self._init_state(X, mu, Y, nu, ids, device, group)
                self.n_iter_ = 0
                if heights is not None:
                    self._load_heights(heights(self.target_))
        except BaseException:
            # Bad input (or an interruption) before any training: the estimator as it was.
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise
        if incremental and not one_pass:
            _stream.stop_stream(self._state)  # a fit continues from the map the stream used
        new_points = self._change_target(Y, nu, ids) if incremental and Y is not None else None
        problem = self._problem(X, mu, group)
        if new_points is not None:
            _solver.restart_schedule(self._state, problem, config, new_points)
        if one_pass:
            max_steps = -(-X.shape[0] // self.batch_size)  # the batches of one pass
        callbacks = list(self.callbacks or [])
        if atoms is not None and atoms.floor > self.tol:
            atoms.warn(self.tol, self.target_.shape[0])
            callbacks.append(StopAtFloor(atoms.floor))
        steps_before = self._state.step
        start = copy.deepcopy(self._state.model.state_dict())
        with chain_callbacks(self, callbacks, self.verbose, max_steps) as callback:
            result = None
            try:
                if one_pass:
                    result = _stream.stream_steps(self._state, problem, config, callback)
                elif max_steps > 0:
                    result = _solver.run(self._state, problem, config, max_steps, callback)
            except _solver.DivergenceError as exc:
                raise _solver.DivergenceError(
                    f"{exc} A possible cause is float32 overflow: the solver computes the "
                    f"scores <x, y> + h in float32 on the standardised data (scale_="
                    f"{self.scale_:.3g}), so huge heights (from a large step size) or rows far "
                    "out relative to the data's spread overflow 3.4e+38."
                ) from exc
            finally:
                # Also after an error or an interruption: the attributes of the last finite
                # state, before the callbacks hear that the fit ended.
                if result is None:
                    self._keep_finite(start, config)
                if result is None and one_pass and self._state.seen_masses is not None:
                    result = _stream.stream_result(self._state, problem, config)
                elif result is None:
                    result = _solver.summarize(self._state, problem, config)
                if not one_pass:  # a fit is the start of a stream that partial_fit continues
                    _stream.start_stream(self._state, result, problem.n_samples)
                self.n_iter_ += self._state.step - steps_before
                self._finish(result)
        if not result.converged and not result.stopped and not one_pass:
            self._warn_not_converged(result, problem, atoms)
        return self

    def _fit_at_heights(self, X, X_target, heights, sample_weight=None, target_weight=None):
        """A fresh fit that takes no step: its heights are ``heights(target_)`` (input units,
        one per row of ``target_``, e.g. from an exact solver's duals), its fitted attributes
        those of their power diagram over ``X`` (one pass)."""
        return self._fit(
            X,
            X_target,
            sample_weight,
            target_weight,
            None,
            incremental=False,
            max_steps=0,
            heights=heights,
        )

    def _load_heights(self, heights) -> None:
        """Set the free heights to ``heights`` (input units, one per row of ``target_``)."""
        heights = np.asarray(heights, dtype=np.float64)
        standardised = (heights + self.target_ @ self.center_) / self.scale_**2
        model = self._state.model
        target = torch.as_tensor(standardised, dtype=torch.float64, device=self.device_)
        with torch.no_grad():
            model.residual.copy_(residual_for(model, self._target_t, target - target.mean()))

    def _keep_finite(self, start, config) -> None:
        """After an error or an interruption: back to this call's starting parameters if the
        current ones are not finite (an interruption in the middle of a diverging step)."""
        state = self._state
        if all(bool(torch.isfinite(p).all()) for p in state.model.parameters()):
            return
        state.model.load_state_dict(start)
        state.optimizer = _solver.make_optimizer(state.model, config)

    def _warn_not_converged(self, result, problem, atoms=None):
        stopped = (
            f"OTNetTransport stopped after {result.n_steps} iterations with marginal error "
            f"{self.marginal_error_:.4g} > tol={self.tol}"
        )
        advice = None if atoms is None else atoms.advice(self.tol)
        if advice is None:
            per_target = problem.n_samples / self.target_.shape[0]
            advice = "increase max_iter or tol."
            if problem.is_empirical and per_target < _FEW_SAMPLES_PER_TARGET:
                advice += (
                    f" With {per_target:.2g} samples per target the map is close to an "
                    "assignment, which float32 scores resolve only approximately past about "
                    "1,000 points (user guide: 'As many samples as targets')."
                )
            stopped += ";"
        else:
            stopped += "."
        warnings.warn(f"{stopped} {advice}", ConvergenceWarning, stacklevel=4)

    def _config(self) -> _solver.SolverConfig:
        return _solver.SolverConfig(
            learning_rate=self.learning_rate,
            height_learning_rate=self.height_learning_rate,
            batch_size=self.batch_size,
            max_batch_size=self.max_batch_size,
            tol=self.tol,
            epsilon=self.epsilon,
            n_iter_no_change=self.n_iter_no_change,
            solver=self.solver,
            keep_candidates=bool(self.warm_start),
        )

    def _init_state(self, X, mu, Y, nu, ids, device, group=LOCAL):
        # One centre and one scale for source and target (``center_``, ``scale_``, set by
        # ``_fit`` from ``standardization``): the map is equivariant under them, and the
        # optimiser then works in units where defaults make sense.
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        if group.distributed:  # rank 0's seed: the same model on every rank
            seed = int(group.gather(seed)[0])
        generator = torch.Generator(device=device).manual_seed(seed)
        model = initial_height_model(
            self.height,
            self._to_tensor(X, "cpu"),
            self._to_tensor(Y, "cpu"),
            None if mu is None else torch.as_tensor(mu),
            torch.as_tensor(nu),
            hidden_layer_sizes=check_hidden_layer_sizes(self.hidden_layer_sizes),
            fourier_scale=self.fourier_scale,
            init=self.init,
            generator=torch.Generator().manual_seed(seed),
            group=group,
        )
        self._state = _solver.init_state(model.to(device), self._config(), generator)
        self._set_target(Y, nu, ids)

    def _set_target(self, Y, nu, ids=None):
        self.target_ = Y
        self.target_weight_ = nu
        self._target_ids = ids
        self._target_t = self._to_tensor(Y)
        self._nu_t = torch.as_tensor(nu, dtype=_DTYPE, device=self.device_)

    def _change_target(self, Y, nu, ids) -> torch.Tensor | None:
        """Start from the trained heights on a changed target; return the mask of its points
        that have no previous point (``None`` when the target did not change).

        The network part carries over as it is. With per-point residuals (vector and residual
        heights), a point matched to a previous point (by id when both calls gave
        ``target_ids``, else by exact coordinates) starts from its trained height, kept through
        the affine part of the points' moves and moved to first order by the rest; the others
        start from the network's height or their nearest previous points' first-order
        expansions, at their places before the affine motion
        (:func:`~._reuse.carry_over_heights`).
        """
        same_points = np.array_equal(Y, self.target_)
        if same_points and np.array_equal(nu, self.target_weight_):
            self._target_ids = ids if ids is not None else self._target_ids
            return None
        _stream.stop_stream(self._state)  # a new problem: a new stream
        model = self._state.model
        rows = self._match_rows(Y, ids)
        Y_old = self._target_t
        if getattr(model, "residual", None) is not None and not same_points:
            # The height function's gradient at a target point is minus its cell's barycentre.
            carry_over_heights(
                model,
                self._target_t,
                -self._barycenters_t,
                self._to_tensor(Y),
                rows,
                h_old=self._heights_t,  # the map's heights, as predict_heights takes them
            )
            self._state.optimizer = _solver.make_optimizer(model, self._config())
        self._set_target(Y, nu, ids)
        _solver.retarget_candidates(self._state, Y_old, self._target_t, rows)
        return rows < 0

    def _match_rows(self, Y, ids=None) -> torch.Tensor:
        """Index in ``target_`` of each row of ``Y`` (``-1``: none), by id when ``ids`` and the
        fitted target's ids are both known, else by exact coordinates."""
        if ids is not None and self._target_ids is not None:
            old = {key: i for i, key in enumerate(self._target_ids.tolist())}
            keys = ids.tolist()
        else:
            old = {row.tobytes(): i for i, row in enumerate(self.target_)}
            keys = [row.tobytes() for row in np.asarray(Y, dtype=self.target_.dtype)]
        return torch.as_tensor([old.get(key, -1) for key in keys], device=self.device_)

    def _to_tensor(self, A, device=None) -> torch.Tensor:
        """Standardise (in float64, row chunk by row chunk) into one float32 tensor on the
        model's device: no full-size float64 temporary, whatever the number of rows."""
        A = np.asarray(A)
        out = torch.empty(A.shape, dtype=_DTYPE)
        rows = max(1, 2**22 // max(A.shape[1], 1))
        for r0 in range(0, A.shape[0], rows):
            chunk = (A[r0 : r0 + rows].astype(np.float64) - self.center_) / self.scale_
            out[r0 : r0 + rows] = torch.from_numpy(chunk)
        return out.to(device or self.device_)

    def _problem(self, X, mu, group=LOCAL) -> _solver.Problem:
        return _solver.Problem(
            source=self._to_tensor(X),
            target=self._target_t,
            target_weight=self._nu_t,
            source_weight=None
            if mu is None
            else torch.as_tensor(mu, dtype=_DTYPE, device=self.device_),
            bandwidth=self.bandwidth,
            group=group,
        )

    def _finish(self, result: _solver.SolverResult) -> None:
        """Derive the fitted attributes from the solver's result (no pass over the data)."""
        state = self._state
        occupied = result.masses > 0
        bary = self._target_t.double()
        bary[occupied] = result.sums[occupied] / result.masses[occupied, None]
        self._barycenters_t = bary.to(_DTYPE)
        self._heights_t = result.heights.detach().to(_DTYPE)
        occupied = occupied.cpu().numpy()
        self.barycenters_ = self.target_.copy()  # an empty cell's barycentre: its point
        self.barycenters_[occupied] = bary[occupied].cpu().numpy() * self.scale_ + self.center_
        self.heights_ = self._input_heights(self._heights_t.double().cpu().numpy(), self.target_)
        self.marginal_error_ = result.error
        self.converged_ = result.converged
        self.loss_curve_ = list(state.energies)
        self.marginal_error_curve_ = list(state.errors)
        self.potential_ = state.model
        self.n_samples_seen_ = int(round(state.n_seen))

    # ---------------------------------------------------------------- mapping
    def transform(self, X):
        """Map source points to their target points ``T(x) = y_argmax_j(<x,y_j> + h_j)``.

        With ``epsilon > 0`` the softmax-weighted mean of the target points instead.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to map.

        Returns
        -------
        X_mapped : ndarray of shape (n_samples, n_features)
            Mapped points, in the dtype of ``X`` (float32 or float64).
        """
        check_is_fitted(self)
        X = self._validate_X(X)
        if self.epsilon > 0:
            out = self._soft_map(X)
        else:
            out = self.target_[self._assign(X)]
        return out.astype(X.dtype, copy=False)

    def _validate_X(self, X) -> np.ndarray:
        """Validate rows to map with this fit (named ``X`` in every error, and within range of
        the fitted standardisation)."""
        X = validate_X(self, X, reset=False)
        check_range(X, self.center_, self.scale_, "X", fitted=True)
        return X

    def _soft_map(self, X) -> np.ndarray:
        # float64 here: a float32 product's rounding depends on the batch shape, and a row's
        # image must not depend on the rows mapped with it.
        out = self._cells(torch.float64).soft_mean(self._to_tensor(X).double(), self.epsilon)
        return out.cpu().numpy() * self.scale_ + self.center_

    def predict_index(self, X) -> np.ndarray:
        """Index into ``target_`` of the cell that contains each row of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to assign.

        Returns
        -------
        indices : ndarray of shape (n_samples,)
            ``argmax_j <x, target_j> + heights_j``.
        """
        check_is_fitted(self)
        X = self._validate_X(X)
        return self._assign(X)

    def predict_heights(self, X_target, target_ids=None) -> np.ndarray:
        """Heights the trained model gives the points ``X_target``, at once (no fitting).

        OT-Net's "at once": a point of the fitted target (matched by id when both this call
        and the fit gave ``target_ids``, else by exact coordinates) keeps its trained height
        through the affine part of the points' moves (exact for a translated target) and moves
        to first order by the rest of its move; a new point gets, at its place before that
        affine motion, the network's height (the smooth dual potential learnt from the trained
        heights) or, without a network (``height="vector"``), its nearest trained points'
        first-order expansions. These are the heights a warm start (``warm_start=True`` or
        :meth:`partial_fit`) on a changed ``X_target`` starts from, before its new points are
        fitted to their target mass.

        Parameters
        ----------
        X_target : array-like of shape (n_targets, n_features)
            Target points.
        target_ids : array-like of shape (n_targets,), default=None
            Their identifiers, as in :meth:`fit`.

        Returns
        -------
        heights : ndarray of shape (n_targets,)
            Heights in the input's units, with the constant of ``heights_``:
            ``predict_heights(target_)`` equals ``heights_``, and the power diagram of
            ``X_target`` with these heights is the map a warm start begins with.

        Examples
        --------
        >>> import numpy as np
        >>> from skot import OTNetTransport
        >>> rng = np.random.default_rng(0)
        >>> X, Y = rng.normal(size=(5000, 2)), rng.normal(size=(50, 2))
        >>> ot = OTNetTransport(random_state=0).fit(X, X_target=Y)
        >>> bool(np.allclose(ot.predict_heights(Y), ot.heights_, atol=1e-4))
        True
        >>> ot.predict_heights(rng.normal(size=(3, 2))).shape
        (3,)
        """
        check_is_fitted(self)
        Y = _check_array_named(X_target, "X_target", dtype=[np.float64, np.float32])
        if Y.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X_target has {Y.shape[1]} features, but OTNetTransport is expecting "
                f"{self.n_features_in_} features as input."
            )
        check_range(Y, self.center_, self.scale_, "X_target", fitted=True)
        ids = None if target_ids is None else _check_target_ids(target_ids, Y.shape[0])
        Yt = self._to_tensor(Y)
        h = heights_for(
            self._state.model,
            self._target_t,
            -self._barycenters_t,
            Yt,
            self._match_rows(Y, ids),
            h_old=self._heights_t,
        )
        return self._input_heights(h.double().cpu().numpy(), Y)

    def _input_heights(self, h: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Standardised heights ``h`` of the points ``Y`` in the input's units, with the
        constant of ``heights_``: ``<x, y> + H = s^2 (<x', y'> + h) + terms without y``."""
        H_fit = (
            self.scale_**2 * self._heights_t.double().cpu().numpy() - self.target_ @ self.center_
        )
        return self.scale_**2 * h - Y @ self.center_ - self.target_weight_ @ H_fit

    def inverse_transform(self, X):
        """Map target-space points back to the barycentres of their cells.

        Each row is matched to its nearest target point (itself for rows of ``target_``) and
        replaced by the mean of the training samples in that point's cell.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points in the target space.

        Returns
        -------
        X_source : ndarray of shape (n_samples, n_features)
            Cell barycentres, in the dtype of ``X``.
        """
        check_is_fitted(self)
        X = self._validate_X(X)
        return self.barycenters_[self._nearest_target(X)].astype(X.dtype, copy=False)

    def score(self, X, y=None, sample_weight=None):
        """Negative marginal error of the map on ``X`` (higher is better, at most 0).

        The total variation between the share of ``X`` in each cell and the target weights.
        Every map this estimator produces is optimal for its own cell masses, so a map whose
        masses match the target weights on fresh source data is the optimal transport map.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source samples, ideally not used for training.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples.

        Returns
        -------
        score : float
            ``-TV`` in ``[-1, 0]``.
        """
        check_is_fitted(self)
        X = self._validate_X(X)
        n = X.shape[0]
        w = (
            np.full(n, 1.0 / n)
            if sample_weight is None
            else _check_weights(sample_weight, n, "sample_weight")
        )
        masses = np.bincount(self._assign(X), weights=w, minlength=self.target_.shape[0])
        return -0.5 * float(np.abs(masses - self.target_weight_).sum())

    # ---------------------------------------------------------------- pickling
    def __getstate__(self):
        state = dict(super().__getstate__())
        for key in ("_target_t", "_nu_t", "_heights_t", "_barycenters_t", "potential_"):
            state.pop(key, None)
        if "_state" in state:
            state["_state"] = state_to_dict(self._state)
            state["device_"] = str(self.device_)
            state["_heights"] = self._heights_t.cpu()  # the map's heights, bit for bit
        return state

    def __setstate__(self, state):
        snapshot = state.pop("_state", None)
        heights = state.pop("_heights", None)
        super().__setstate__(state)
        if snapshot is None:
            return
        device = torch.device(self.device_)
        if device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This estimator was fitted on {device} but CUDA is not available; "
                "it was moved to the CPU.",
                UserWarning,
                stacklevel=2,
            )
            device = torch.device("cpu")
        self.device_ = device
        self._state = state_from_dict(snapshot, device)
        self.potential_ = self._state.model
        self._set_target(self.target_, self.target_weight_, self.__dict__.get("_target_ids"))
        # The map's heights (after a stream, the average's, not the model's iterate).
        if heights is None:  # pickled by an older version
            heights = torch.as_tensor(
                (self.heights_ + self.target_ @ self.center_) / self.scale_**2, dtype=_DTYPE
            )
        self._heights_t = heights.to(device)
        self._barycenters_t = self._to_tensor(self.barycenters_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.non_deterministic = False
        return tags
