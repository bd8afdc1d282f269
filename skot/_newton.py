"""Damped Newton steps for free heights on an empirical source (pure torch).

Close to the solution, first-order steps on the piecewise-linear energy oscillate between
neighbouring cells: one sample changes cell, then back. Here the energy is smoothed by a
log-sum-exp at temperature ``eps``,

    E_eps(h) = eps sum_i w_i log sum_j exp((<x_i, y_j> + h_j) / eps) - sum_j nu_j h_j,

whose gradient is (soft cell masses) - nu and whose Hessian is
``(1/eps) sum_i w_i (diag p_i - p_i p_i^T)``, ``p_i`` the softmax of sample ``i``'s scores.
Each sample keeps only its ``k`` best targets, so the Hessian is ``n k``-sparse and a
Levenberg-Marquardt step costs one pass over the sample (the scores) plus a few
conjugate-gradient iterations on sparse products. ``eps`` starts at the median gap between a
sample's best and second-best score and is divided by 4 whenever the smoothed marginals are
within half the tolerance, until the hard marginals (the actual map) are within it.

Every sum over the sample (masses, energies, the Hessian's products) goes through ``group``
(:mod:`._distributed`): with a distributed group each rank passes over its own rows and every
rank solves the same (summed) system.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._candidates import Candidates
from ._distributed import LOCAL, LocalGroup
from ._kernels import marginal_error

__all__ = [
    "Smoothed",
    "coarse_levels",
    "energy_bound",
    "model_decrease",
    "newton_direction",
    "newton_step",
    "pass_at",
    "resmoothed",
    "smoothed",
    "update",
]

#: The Levenberg-Marquardt damping of a first step, and of the first step at a new
#: temperature (the damping grown by refused steps at the old one would keep the new steps
#: too short for float32 heights to move).
INITIAL_DAMPING = 1e-2
#: From :data:`SHARPEN_MIN_DIMENSION` on, the temperature also drops once the smoothed
#: marginal error is this many times below the hard one: the hard map then stalls at that
#: temperature (n = m = 5,000, d = 64: 0.18 for a dozen steps while the smoothed error crept
#: from 0.02 to 0.005), and the last digits of the smoothed problem would be undone at the
#: next temperature anyway.
SHARPEN_RATIO = 8.0
#: In low dimension the smoothed problem's slow modes must be solved at the high temperature,
#: where Newton steps move them: the same rule took n = m = 10,000, d = 2 from 97 to 156
#: steps (and 2,000 from 46 to 80).
SHARPEN_MIN_DIMENSION = 8
#: Smallest temperature (standardised units): float32 scores resolve about 1e-7 of their size.
MIN_TEMPERATURE = 1e-6
#: Targets kept per sample; beyond the 8th best a sample's soft weight is negligible once
#: ``eps`` is below the gaps that matter.
TOP_K = 8
#: A sample whose largest soft weight is within this of 1 is left out of the Hessian's products
#: (its contribution, about ``(1 - p_max) / eps``, is below rounding of the others').
SATURATED = 1e-12
#: Candidates kept per sample between passes (0: every pass is a full pass). Twice ``TOP_K``
#: leaves a margin for the heights to move before a sample's top ``TOP_K`` can change.
CANDIDATES = 16
#: Rows per chunk of the per-sample temporaries (softmax masses, Hessian products): a few MB
#: whatever the sample's size, instead of several ``(n, TOP_K)`` float64 arrays at once.
ROW_CHUNK = 2**15
#: The conjugate gradients' Hessian products switch to a dense ``(m, m)`` matrix after this
#: many products over the rows (building it costs about as many; each later product is then
#: a small matvec), where m is at most :data:`DENSE_MAX_CELLS` (32 MB of float64). Only
#: systems that need many iterations (low dimension) get there.
DENSE_AFTER = 16
DENSE_MAX_CELLS = 2048
#: A cold fit first solves on nested random subsamples, each ``COARSE_FACTOR`` times smaller
#: than the next, down to ``COARSE_ROWS_PER_CELL`` rows per target (fewer make Newton steps
#: slow, seen at d = 2), each to its sampling noise ``COARSE_NOISE sqrt(m / rows)``: the
#: heights it hands on save most of the full sample's early steps, whose trial passes move the
#: heights too far for the candidates to hold.
COARSE_FACTOR = 4
COARSE_ROWS_PER_CELL = 25
COARSE_NOISE = 0.2


def coarse_levels(n_samples: int, n_cells: int, tol: float) -> list[tuple[int, float]]:
    """The subsamples of a cold fit before the whole sample: ``(rows, tolerance)`` from the
    smallest up, empty when even the largest would hold too few rows per target."""
    levels = []
    rows = n_samples // COARSE_FACTOR
    while rows >= COARSE_ROWS_PER_CELL * n_cells:
        levels.append((rows, max(tol, COARSE_NOISE * (n_cells / rows) ** 0.5)))
        rows //= COARSE_FACTOR
    return levels[::-1]


@dataclass
class Smoothed:
    """One pass over the sample at fixed heights, at temperature ``eps``.

    The scores do not depend on ``eps``: :func:`resmoothed` changes the temperature without a
    new pass. Energies and masses are summed over the ranks; ``prob``, ``index`` and
    ``scores`` are this rank's rows.
    """

    eps: float
    energy: float  # smoothed energy E_eps(h)
    hard_energy: float  # E(h), the energy of the hard map
    soft: Tensor  # (m,) float64 smoothed cell masses
    hard: Tensor  # (m,) float64 hard cell masses
    prob: Tensor  # (n, k) float64 softmax over each sample's k best targets
    index: Tensor  # (n, k) their indices
    scores: Tensor  # (n, k) their scores <x, y_j> + h_j
    nu_h: float  # sum_j nu_j h_j
    candidates: Candidates | None = None  # carried to the passes that follow


def smoothed(
    X: Tensor,
    w: Tensor,
    Y: Tensor,
    h: Tensor,
    nu: Tensor,
    eps: float | None = None,
    k: int = TOP_K,
    candidates: Candidates | None = None,
    *,
    refuse_above: float | None = None,
    group: LocalGroup = LOCAL,
) -> Smoothed | None:
    """Smoothed and hard energies and marginals of heights ``h`` (one pass over ``X``).

    ``eps=None`` takes the initial temperature: the median gap between each sample's best and
    second-best score. With ``candidates`` (built on ``X``, kept at least ``k`` wide), the pass
    rescores them instead and is carried on in the result; then with ``refuse_above``, it
    returns ``None`` with no product when the rescored candidates alone already put the
    smoothed energy above it (:func:`energy_bound`).
    """
    cells = group.cells(Y, h)
    if candidates is not None and (
        candidates.X is not X or candidates.min_valid < min(k, Y.shape[0])
    ):
        candidates = None
    if candidates is None:
        vals, idx = cells.top_k(X, k)
    else:
        screen = None
        if refuse_above is not None and eps is not None:

            def screen(low):
                return energy_bound(low, w, h, nu, eps, group=group) > refuse_above

        found = candidates.top_k(cells, k, screen)
        if found is None:
            return None
        vals, idx = found
    if eps is None:
        gap = group.median(vals[:, 0] - vals[:, 1]) if vals.shape[1] > 1 else 1.0
        eps = max(gap, MIN_TEMPERATURE)
    hard, potential = _summed(
        group, Y.shape[0], idx[:, 0], w.double(), w.double() @ vals[:, 0].double()
    )
    nu_h = float(nu.double() @ h.double())
    hard_energy = potential - nu_h
    empty = vals.new_empty(0)
    base = Smoothed(eps, 0.0, hard_energy, hard, hard, empty, idx, vals, nu_h, candidates)
    return resmoothed(base, w, eps, group=group)


def resmoothed(s: Smoothed, w: Tensor, eps: float, *, group: LocalGroup = LOCAL) -> Smoothed:
    """The same pass at temperature ``eps`` (no new scores)."""
    z = s.scores.to(torch.float64, copy=True).div_(eps)  # in place below: a copy
    lse = torch.logsumexp(z, dim=1)
    prob = z.sub_(lse[:, None]).exp_()
    w64 = w.double()
    soft, potential = _summed(group, s.hard.shape[0], s.index, w64, w64 @ lse, prob)
    energy = eps * potential - s.nu_h
    return Smoothed(
        eps, energy, s.hard_energy, soft, s.hard, prob, s.index, s.scores, s.nu_h, s.candidates
    )


def _add_cell_sums(
    out: Tensor, index: Tensor, row_weight: Tensor, values: Tensor | None = None
) -> Tensor:
    """``out_j += sum_i row_weight_i [index_i = j]`` (``index`` of shape ``(n,)``), or with
    ``values`` (``(n, k)``, as ``index``) ``sum_ik row_weight_i values_ik [index_ik = j]``; in
    row chunks, so that no ``(n, k)`` temporary is built."""
    for r0 in range(0, index.shape[0], ROW_CHUNK):
        rows = slice(r0, r0 + ROW_CHUNK)
        add = row_weight[rows] if values is None else row_weight[rows, None] * values[rows]
        out.index_add_(0, index[rows].reshape(-1), add.reshape(-1))
    return out


def _summed(
    group: LocalGroup,
    m: int,
    index: Tensor,
    row_weight: Tensor,
    total: Tensor,
    values: Tensor | None = None,
) -> tuple[Tensor, float]:
    """Masses of :func:`_add_cell_sums` over ``m`` cells and a scalar ``total``, summed over
    the ranks in one collective."""
    out = torch.zeros(m + 1, dtype=torch.float64, device=index.device)
    _add_cell_sums(out[:m], index, row_weight, values)
    out[m] = total
    group.sum(out)
    return out[:m], float(out[m])


def energy_bound(
    low: Tensor, w: Tensor, h: Tensor, nu: Tensor, eps: float, *, group: LocalGroup = LOCAL
) -> float:
    """The smoothed energy at heights ``h`` computed from scores ``low`` (``(n, k)``), each
    row's at most its ``k`` best: a lower bound on that of :func:`smoothed` (``logsumexp``
    grows with every score)."""
    total = torch.zeros(1, dtype=torch.float64, device=low.device)
    for r0 in range(0, low.shape[0], ROW_CHUNK):
        rows = slice(r0, r0 + ROW_CHUNK)
        total += w[rows].double() @ torch.logsumexp(low[rows].double() / eps, dim=1)
    group.sum(total)
    return eps * float(total[0]) - float(nu.double() @ h.double())


def _hessian_diagonal(s: Smoothed, w_eps: Tensor, m: int, group: LocalGroup) -> Tensor:
    """The smoothed Hessian's diagonal ``sum_i w_i p_ij / eps`` (``w_eps = w / eps``)."""
    diag = torch.zeros(m, dtype=torch.float64, device=w_eps.device)
    return group.sum(_add_cell_sums(diag, s.index, w_eps, s.prob))


def _damping_shift(diag: Tensor, damping: float) -> Tensor:
    """``damping D``: the diagonal floored at its mean, times ``damping``."""
    return damping * diag.clamp_min(float(diag.mean()))


def model_decrease(
    s: Smoothed,
    w: Tensor,
    nu: Tensor,
    eps: float,
    damping: float,
    d: Tensor,
    *,
    diag: Tensor | None = None,
    group: LocalGroup = LOCAL,
) -> float:
    """The decrease of the smoothed energy that its quadratic model predicts for the damped
    step ``d`` (:func:`newton_direction`'s): with ``(H + S) d = b``, ``b = nu - soft``,
    ``-(g d + d H d / 2) = (b d + d S d) / 2``. ``diag``: the Hessian's diagonal, if built."""
    if diag is None:
        diag = _hessian_diagonal(s, w.double() / eps, nu.shape[0], group)
    shift = _damping_shift(diag, damping)
    d = d.double()
    return 0.5 * (float((nu.double() - s.soft) @ d) + float((shift * d) @ d))


def _dense_hessian(prob: Tensor, index: Tensor, w_eps: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """``(M, a)`` with ``sum_i w_i (diag p_i - p_i p_i^T) / eps = diag(a) - M`` over the rows
    given (``w_eps = w / eps``), ``M`` dense ``(m, m)``, built in row chunks."""
    M = torch.zeros(m * m, dtype=torch.float64, device=prob.device)
    a = torch.zeros(m, dtype=torch.float64, device=prob.device)
    rows = ROW_CHUNK // 4  # (rows, k, k) pair temporaries of a few MB
    for r0 in range(0, index.shape[0], rows):
        p, cells = prob[r0 : r0 + rows], index[r0 : r0 + rows].long()
        wp = w_eps[r0 : r0 + rows, None] * p
        a.index_add_(0, cells.reshape(-1), wp.reshape(-1))
        pairs = (cells[:, :, None] * m + cells[:, None, :]).reshape(-1)
        M.index_add_(0, pairs, (wp[:, :, None] * p[:, None, :]).reshape(-1))
    return M.view(m, m), a


def newton_direction(
    s: Smoothed,
    w: Tensor,
    nu: Tensor,
    eps: float,
    damping: float,
    *,
    max_iter: int = 50,
    rtol: float = 1e-3,
    diag: Tensor | None = None,
    group: LocalGroup = LOCAL,
) -> Tensor:
    """Solve ``(H + damping D) d = nu - soft`` by Jacobi-preconditioned conjugate gradients.

    ``D`` is the Hessian's diagonal floored at its mean: cells that few samples touch (a
    new point's empty cell) get a bounded step instead of one that floods them. ``diag``:
    that diagonal, if already built (it depends on the pass, not the damping).
    """
    m = nu.shape[0]
    w_eps = w.double() / eps
    if diag is None:
        diag = _hessian_diagonal(s, w_eps, m, group)
    # A sample all but certain of its cell adds nothing to the Hessian's products (its p_i is
    # a unit vector to within SATURATED): only the others enter them, which at the low
    # temperatures of the last steps are a small share of the sample. The diagonal ``D`` (the
    # damping's scale and the preconditioner) keeps every sample: without the saturated ones
    # the cells they fill would get almost no damping, and the steps stall (seen at n = m).
    active = (s.prob[:, 0] < 1 - SATURATED).nonzero().squeeze(1)
    prob, index, w_eps = s.prob[active], s.index[active], w_eps[active]
    shift = _damping_shift(diag, damping)
    dense, calls = None, 0

    def hessian_times(v: Tensor) -> Tensor:
        nonlocal dense, calls
        calls += 1
        if dense is None and calls > DENSE_AFTER and m <= DENSE_MAX_CELLS and not group.distributed:
            # Many iterations (low dimension): the (m, m) matrix, built once for about
            # DENSE_AFTER products over the rows, makes each later product a small matvec.
            dense = _dense_hessian(prob, index, w_eps, m)
        if dense is not None:
            M, active_diag = dense
            return active_diag * v - M @ v + shift * v
        out = torch.zeros(m, dtype=torch.float64, device=w.device)
        for r0 in range(0, index.shape[0], ROW_CHUNK):
            p, cells = prob[r0 : r0 + ROW_CHUNK], index[r0 : r0 + ROW_CHUNK]
            vv = v[cells]
            centred = vv - (p * vv).sum(1, keepdim=True)
            _add_cell_sums(out, cells, w_eps[r0 : r0 + ROW_CHUNK], p * centred)
        return group.sum(out) + shift * v

    b = nu.double() - s.soft
    inv_diag = 1.0 / (diag + shift)
    x = torch.zeros_like(b)
    r = b.clone()
    z = inv_diag * r
    p = z.clone()
    rz = float(r @ z)
    stop = rtol * float(b.norm())
    for _ in range(max_iter):
        Ap = hessian_times(p)
        curvature = float(p @ Ap)
        if not curvature > 0 or rz == 0:
            break  # converged to rounding, or no curvature left along p
        alpha = rz / curvature
        x += alpha * p
        r -= alpha * Ap
        if float(r.norm()) <= stop:
            break
        z = inv_diag * r
        rz, rz_old = float(r @ z), rz
        p = z + (rz / rz_old) * p
    return x


def newton_step(
    X: Tensor,
    w: Tensor,
    Y: Tensor,
    nu: Tensor,
    h: Tensor,
    current: Smoothed,
    eps: float,
    damping: float,
    *,
    max_tries: int = 8,
    group: LocalGroup = LOCAL,
) -> tuple[Tensor | None, Smoothed, float]:
    """One damped Newton step from ``h`` (whose pass is ``current``).

    A step is accepted when it decreases the smoothed energy enough (Armijo) and also the
    smoothed marginal error: a step that empties or floods cells far from where the quadratic
    model holds is refused even if the energy went down. Returns ``(d, pass at h + d,
    damping)``, or ``(None, current, damping)`` when ``max_tries`` dampings failed. The
    damping grows fourfold after each failure; after a success it moves by Nielsen's rule,
    ``max(1/3, 1 - (2 rho - 1)^3)``, ``rho`` the actual over the predicted decrease
    (:func:`model_decrease`): down threefold where the model held, up where it barely did, so
    that fewer of the next trials are refused (each one a pass).
    """
    g = current.soft - nu.double()
    error = float(g.abs().sum())
    # Allowance for float32 scores: energy differences below it are rounding, not ascent.
    noise = 1e-7 * (abs(current.energy) + 1.0)
    diag = _hessian_diagonal(current, w.double() / eps, nu.shape[0], group)  # every try's
    for _ in range(max_tries):
        d = newton_direction(current, w, nu, eps, damping, diag=diag, group=group)
        if not bool(torch.isfinite(d).all()):
            damping *= 4
            continue
        k = current.index.shape[1]
        limit = current.energy + 1e-4 * float(g @ d) + noise
        h_trial = h + d.to(h.dtype)
        cache = current.candidates
        trial = smoothed(X, w, Y, h_trial, nu, eps, k, cache, refuse_above=limit, group=group)
        if trial is None:  # the candidates alone fail the decrease: no pass needed
            damping *= 4
            continue
        if trial.energy <= limit and float((trial.soft - nu.double()).abs().sum()) < error:
            predicted = model_decrease(current, w, nu, eps, damping, d, diag=diag, group=group)
            rho = (current.energy - trial.energy) / predicted if predicted > 0 else 1.0
            return d, trial, max(damping * max(1 / 3, 1 - (2 * rho - 1) ** 3), 1e-6)
        damping *= 4
    return None, current, damping


@torch.no_grad()
def pass_at(
    state,
    X: Tensor,
    w: Tensor,
    Y: Tensor,
    nu: Tensor,
    candidates: int | None = None,
    *,
    group: LocalGroup = LOCAL,
) -> Smoothed:
    """The smoothed pass at the current heights of ``state.model``, at ``state.temperature``
    (the initial one when ``None``, which is then stored).

    A full pass that also keeps each sample's ``candidates`` best cells (:data:`CANDIDATES`
    when ``None``; ``0`` keeps none) for the passes of the Newton steps that follow.
    """
    width = CANDIDATES if candidates is None else candidates
    h = state.model(Y)
    cache = None
    if width >= TOP_K:
        # The last fit's on these rows, if any.
        cache = Candidates.kept_or_new(state.candidates, group.cells(Y, h), X, width)
    current = smoothed(X, w, Y, h, nu, state.temperature, TOP_K, cache, group=group)
    state.temperature = current.eps
    return current


@torch.no_grad()
def update(
    state,
    X: Tensor,
    w: Tensor,
    Y: Tensor,
    nu: Tensor,
    tol: float,
    current: Smoothed,
    *,
    group: LocalGroup = LOCAL,
) -> Smoothed:
    """One damped Newton step on the free heights of ``state.model``; return the pass at the
    new heights.

    The temperature drops fourfold once the smoothed marginals are within half the tolerance
    while the hard ones are not, once (in dimension :data:`SHARPEN_MIN_DIMENSION` and more)
    the smoothed marginal error is :data:`SHARPEN_RATIO` times below the hard one, or when no
    damping gives a decrease (float resolution).
    """
    model = state.model
    h = model(Y)
    soft_error = marginal_error(current.soft, nu.double())
    hard_error = marginal_error(current.hard, nu.double())
    stalled = X.shape[1] >= SHARPEN_MIN_DIMENSION and soft_error * SHARPEN_RATIO <= hard_error
    sharpen = soft_error <= 0.5 * tol or stalled
    if sharpen and state.temperature > MIN_TEMPERATURE:
        state.temperature = max(state.temperature / 4, MIN_TEMPERATURE)
        state.damping = min(state.damping, INITIAL_DAMPING)
        current = resmoothed(current, w, state.temperature, group=group)
    d, nxt, state.damping = newton_step(
        X, w, Y, nu, h, current, state.temperature, state.damping, group=group
    )
    if d is None:
        state.temperature = max(state.temperature / 4, MIN_TEMPERATURE)
        state.damping = min(state.damping, INITIAL_DAMPING)
        return resmoothed(current, w, state.temperature, group=group)
    model.residual += d.to(model.residual.dtype)
    model.residual -= (nu * model.residual).sum()  # a constant shift: the pass stays valid
    return nxt
