"""What a trained height model gives a changed target (pure torch).

OT-Net's reuse: :func:`distill` fits the network of a residual model to its converged heights
(the smooth dual potential ``h(y)``), :func:`heights_for` continues the heights to moved and
new target points, :func:`carry_over_heights` writes them into the model's residual, and
:func:`warm_start_heights` corrects them with passes over the source: new points placed so that
each new cell starts with its target mass, then one Jacobi sweep over every cell.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._kernels import PowerCells, default_block_elements
from ._potentials import _MLP, HeightModel

__all__ = [
    "carry_over_heights",
    "distill",
    "heights_for",
    "insert_points",
    "refit_cells",
    "transfer_heights",
    "warm_start_heights",
]


def transfer_heights(
    Y_old: Tensor, h_old: Tensor, grad_old: Tensor, Y_new: Tensor, k: int = 8
) -> Tensor:
    """Heights of new target points from the trained heights of nearby old ones.

    Each of the ``k`` nearest old points ``y_i`` proposes its first-order expansion
    ``h_i + <g_i, y - y_i>``, with ``g_i`` the gradient of the height function at ``y_i`` (for
    the dual potential, minus the barycentre of ``y_i``'s cell); the proposals are averaged with
    inverse squared distances, so a point at an old point's position gets that point's
    height. Computed in chunks of new points.
    """
    out = torch.empty(Y_new.shape[0], dtype=h_old.dtype, device=h_old.device)
    k = min(k, Y_old.shape[0])
    chunk = max(1, default_block_elements(Y_old.device) // max(Y_old.shape[0], 1))
    for r0 in range(0, Y_new.shape[0], chunk):
        Q = Y_new[r0 : r0 + chunk]
        dist, idx = torch.cdist(Q, Y_old).topk(k, dim=1, largest=False)
        step = ((Q[:, None, :] - Y_old[idx]) * grad_old[idx]).sum(dim=2)
        proposal = h_old[idx].double() + step.double()
        weight = 1.0 / dist.double().clamp_min(1e-12) ** 2
        weight /= weight.sum(dim=1, keepdim=True)
        out[r0 : r0 + chunk] = (weight * proposal).sum(dim=1).to(out.dtype)
    return out


def heights_for(
    model: HeightModel,
    Y_old: Tensor,
    grad_old: Tensor,
    Y_new: Tensor,
    rows: Tensor,
    h_old: Tensor | None = None,
) -> Tensor:
    """Heights that continue ``model``'s heights on ``Y_old`` to the points ``Y_new``.

    ``rows[i]`` is the index in ``Y_old`` of new point ``i`` (``-1``: a new point). A matched
    point keeps its height, moved to first order along ``grad_old`` (the height function's
    gradient at the old points) if it moved, so its cell stays where it was. A new point gets
    the network's height ``offset + f_theta(y)`` when the model has a network (after
    :func:`distill`, the smooth dual potential), else its old neighbours' first-order
    expansions (:func:`transfer_heights`). ``h_old`` are the old points' heights (default:
    the model's).
    """
    with torch.no_grad():
        if h_old is None:
            h_old = model(Y_old)
        matched = rows >= 0
        src = rows[matched]
        h_new = torch.empty(Y_new.shape[0], dtype=h_old.dtype, device=h_old.device)
        moved = Y_new[matched] - Y_old[src]
        h_new[matched] = h_old[src] + (moved * grad_old[src]).sum(dim=1)
        net = getattr(model, "net", None)
        fresh = Y_new[~matched]
        if net is not None:
            h_new[~matched] = model.offset(fresh) + net(fresh)
        else:
            h_new[~matched] = transfer_heights(Y_old, h_old, grad_old, fresh)
    return h_new


def carry_over_heights(
    model: HeightModel, Y_old: Tensor, grad_old: Tensor, Y_new: Tensor, rows: Tensor
) -> None:
    """Give ``model`` a fresh residual so that its heights on ``Y_new`` are
    :func:`heights_for` (the network part, if any, is kept as it is)."""
    h_new = heights_for(model, Y_old, grad_old, Y_new, rows)
    with torch.no_grad():
        net = getattr(model, "net", None)
        new = h_new - model.offset(Y_new) - (net(Y_new) if net is not None else 0.0)
    model.residual = nn.Parameter(new)


#: Frequency factors (of the network's initial Fourier frequencies) and relative ridge
#: penalties among which :func:`distill` picks by generalised cross-validation.
DISTILL_FREQUENCY_FACTORS = (1 / 40, 1 / 20, 1 / 10, 1 / 4, 1 / 2, 1.0)
DISTILL_RIDGES = tuple(10.0**p for p in range(-8, 2))
#: Targets on which the frequency and the penalty are selected (all of them are fitted).
DISTILL_SELECTION_ROWS = 4096


def _features(net: _MLP, Y: Tensor) -> Tensor:
    """The network's last hidden layer on ``Y``, in float64."""
    with torch.no_grad():
        Z = Y
        if net.freqs.shape[1]:
            z = 2 * math.pi * (Y @ net.freqs)
            Z = torch.cat([Y, torch.sin(z), torch.cos(z)], dim=1)
        return net.layers[:-1](Z).double()


def _gcv(P: Tensor, c: Tensor) -> tuple[float, float]:
    """Best generalised cross-validation score over :data:`DISTILL_RIDGES` of the ridge
    regression of ``c`` on ``P``, and its penalty (relative to the mean squared singular
    value)."""
    U, S, _ = torch.linalg.svd(P, full_matrices=False)
    Uc = U.T @ c
    outside = float(c @ c - Uc @ Uc)  # the part of c no penalty can fit
    s2 = S**2
    best = (math.inf, DISTILL_RIDGES[0])
    for ridge in DISTILL_RIDGES:
        shrink = ridge * float(s2.mean()) / (s2 + ridge * float(s2.mean()))
        residual = outside + float(((shrink * Uc) ** 2).sum())
        dof = float((1 - shrink).sum())
        score = residual / max(P.shape[0] - dof, 1.0) ** 2
        best = min(best, (score, ridge))
    return best


def distill(model: HeightModel, Y: Tensor, generator: torch.Generator | None = None) -> None:
    """Fit the network of a residual model to its heights on ``Y``; the heights stay as they
    are (the residual keeps what the network does not explain).

    The network's last layer is the ridge regression of the heights' correction on its last
    hidden layer, with the Fourier frequencies and the penalty chosen by generalised
    cross-validation (on at most :data:`DISTILL_SELECTION_ROWS` targets): the network learns
    the smooth dual potential ``h(y)`` that new target points take their heights from, not
    the per-point noise, which stays in the residual. Closed form, in float64: no iterations.
    """
    net = getattr(model, "net", None)
    if net is None or getattr(model, "residual", None) is None or Y.shape[0] < 2:
        return
    with torch.no_grad():
        c = (model(Y) - model.offset(Y)).double()
        pick = torch.arange(Y.shape[0], device=Y.device)
        if Y.shape[0] > DISTILL_SELECTION_ROWS:
            pick = torch.randperm(Y.shape[0], generator=generator, device=Y.device)
            pick = pick[:DISTILL_SELECTION_ROWS]
        # The factors are of the initial frequencies: ``freqs`` holds them times the factor
        # of the last distillation.
        base = net.freqs / getattr(net, "frequency_factor", 1.0)
        factors = DISTILL_FREQUENCY_FACTORS if base.shape[1] else (1.0,)
        best = (math.inf, 1.0, DISTILL_RIDGES[0])
        for factor in factors:
            net.freqs.copy_(base * factor)
            P = _features(net, Y[pick])
            score, ridge = _gcv(P - P.mean(dim=0), c[pick] - c[pick].mean())
            best = min(best, (score, factor, ridge))
        _, factor, ridge = best
        net.freqs.copy_(base * factor)
        net.frequency_factor = factor
        P = _features(net, Y)
        P_mean, c_mean = P.mean(dim=0), c.mean()
        P = P - P_mean
        A = P.T @ P
        # The same relative penalty as in _gcv: the mean squared singular value.
        penalty = ridge * float(torch.trace(A)) / min(P.shape)
        A += penalty * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        coef = torch.linalg.solve(A, P.T @ (c - c_mean))
        last = net.layers[-1]
        last.weight.copy_(coef.to(last.weight.dtype)[None, :])
        last.bias.fill_(float(c_mean - P_mean @ coef))
        model.residual.copy_((c - net(Y).double()).to(model.residual.dtype))


@torch.no_grad()
def insert_points(X: Tensor, w: Tensor, Y: Tensor, h: Tensor, nu: Tensor, new: Tensor) -> Tensor:
    """Heights ``h`` with the heights of the points ``new`` (a boolean mask) raised or lowered
    so that each new cell would hold its target mass ``nu_j`` against the other points' cells.

    Each new point is placed alone among the others (``u(x)``: the best score of ``x`` among
    the points that are not new), so that its cell takes the weight ``nu_j`` of the rows
    closest to entering it: its height is minus the ``nu_j``-quantile of ``<x, y_j> - u(x)``.
    Neighbouring new points then share what each took alone, which Newton steps resolve; none
    starts empty or flooding, which would hold the damped steps back. One pass over ``X``
    against the old points, one against the new ones (rows and columns swapped: the rows are
    the cells).
    """
    if not bool(new.any()) or bool(new.all()):
        return h
    u, _ = PowerCells(Y[~new], h[~new]).assign(X)
    Y_new = Y[new]
    # The most rows a cell of weight nu_j can need: its weight over the lightest row.
    k = _rows_for(float(nu[new].max()), w)
    gain, rows = PowerCells(X, -u).top_k(Y_new, k)  # largest <x, y_j> - u(x) per new point
    reached = w[rows].double().cumsum(dim=1) >= nu[new].double()[:, None]
    last = torch.where(reached.any(dim=1), reached.double().argmax(dim=1), k - 1)
    out = h.clone()
    after = (last + 1).clamp_max(k - 1)
    # Between the last row that enters and the first that does not.
    out[new] = -0.5 * (gain.gather(1, last[:, None]) + gain.gather(1, after[:, None])).squeeze(1)
    return out


def warm_start_heights(
    X: Tensor, w: Tensor, Y: Tensor, h: Tensor, nu: Tensor, new: Tensor
) -> Tensor:
    """The heights a warm start on a changed problem begins its Newton steps from.

    The new points (``new``, a boolean mask) are placed first (:func:`insert_points`); then one
    Jacobi sweep (:func:`refit_cells`) gives every cell the height at which it would hold its
    target mass with the others fixed: the changes (points removed, added, moved, reweighted)
    are spread to their neighbours before the first Newton step. Three passes over ``X``.
    """
    h = insert_points(X, w, Y, h, nu, new)
    return refit_cells(X, w, Y, h, nu, torch.arange(Y.shape[0], device=Y.device))


def _rows_for(mass: float, w: Tensor) -> int:
    """Rows to look at for a cell to gain ``mass``: enough at the lightest row's weight, but at
    most four times the count at the mean weight (a few very light rows must not make every
    cell scan the whole sample; a cell then stops short, and Newton steps finish)."""
    lightest = float(w[w > 0].min())
    mean = float(w.sum()) / w.shape[0]
    rows = min(math.ceil(mass / lightest) + 1, 4 * math.ceil(mass / mean) + 16)
    return int(min(w.shape[0], rows))


def _quantile_drop(gain: Tensor, weight: Tensor, need: Tensor) -> Tensor:
    """Per row of ``gain`` (sorted in decreasing order), the value between the last entry
    whose cumulative ``weight`` is below ``need`` and the next one (the height threshold at
    which exactly the entries up to it are in)."""
    k = gain.shape[1]
    reached = weight.double().cumsum(dim=1) >= need.double()[:, None]
    last = torch.where(reached.any(dim=1), reached.double().argmax(dim=1), k - 1)
    after = (last + 1).clamp_max(k - 1)
    at, following = gain.gather(1, last[:, None]), gain.gather(1, after[:, None])
    # Padding or rows already in (infinite): the last entry itself.
    return torch.where(torch.isfinite(following), 0.5 * (at + following), at).squeeze(1)


@torch.no_grad()
def refit_cells(X: Tensor, w: Tensor, Y: Tensor, h: Tensor, nu: Tensor, cells: Tensor) -> Tensor:
    """One Jacobi sweep over the points ``cells`` (indices): each gets the height at which its
    cell holds its target mass, the other heights as they are.

    A cell with too much weight keeps the rows that beat their second-best cell by the most
    (its height drops by the gap of the last one kept); a cell with too little takes the
    outside rows that come closest to entering it. One top-2 pass over all points, one pass
    of the deficient cells over the rows.
    """
    vals, idx = PowerCells(Y, h).top_k(X, 2)
    gap = vals[:, 0] - vals[:, 1]
    out = h.clone()
    mass = torch.zeros(Y.shape[0], dtype=torch.float64, device=X.device)
    mass.index_add_(0, idx[:, 0], w.double())
    surplus = cells[mass[cells] > nu[cells].double()]
    deficit = cells[mass[cells] < nu[cells].double()]
    if surplus.numel():
        slot = torch.full((Y.shape[0],), -1, dtype=torch.long, device=X.device)
        slot[surplus] = torch.arange(surplus.numel(), device=X.device)
        rows = (slot[idx[:, 0]] >= 0).nonzero().squeeze(1)
        owner = slot[idx[rows, 0]]
        # The rows of the surplus cells, cell by cell, each cell's by decreasing gap.
        order = torch.argsort(gap[rows], descending=True, stable=True)
        rows, owner = rows[order], owner[order]
        order = torch.argsort(owner, stable=True)
        rows, owner = rows[order], owner[order]
        # The first row of each cell's run whose cumulative weight reaches the cell's target.
        cum = w[rows].double().cumsum(0)
        count = torch.bincount(owner, minlength=surplus.numel())
        end = torch.cumsum(count, 0)
        before = torch.where(end - count > 0, cum[(end - count - 1).clamp_min(0)], 0.0)
        reached = (cum - before[owner]) >= nu[surplus].double()[owner]
        pos = torch.arange(rows.numel(), device=X.device)
        first = torch.full((surplus.numel(),), rows.numel(), device=X.device, dtype=torch.long)
        first.scatter_reduce_(0, owner[reached], pos[reached], reduce="amin")
        first = torch.minimum(first, end - 1)
        at = gap[rows[first]]
        nxt = (first + 1).clamp_max(rows.numel() - 1)
        following = torch.where(nxt < end, gap[rows[nxt]], at)
        out[surplus] = h[surplus] - 0.5 * (at + following)
    if deficit.numel():
        held = torch.bincount(idx[:, 0], minlength=Y.shape[0])[deficit]
        extra = _rows_for(float((nu[deficit] - mass[deficit]).max()), w)
        k = int(min(X.shape[0], int(held.max()) + extra))
        # Largest <x, y_j> - u(x): the rows in the cell first (at -h_j), then the others.
        gain, rows = PowerCells(X, -vals[:, 0]).top_k(Y[deficit], k)
        inside = idx[rows, 0] == deficit[:, None]
        weight = torch.where(inside, torch.zeros_like(gain), w[rows])
        gain = torch.where(inside, gain.new_full((), math.inf), gain)
        need = (nu[deficit] - mass[deficit]).to(w.dtype)
        out[deficit] = -_quantile_drop(gain, weight, need)
    return out
