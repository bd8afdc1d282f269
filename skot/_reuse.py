"""What a trained height model gives a changed target (pure torch).

OT-Net's reuse: :func:`distill` fits the network of a residual model to its converged heights
(the smooth dual potential ``h(y)``), :func:`heights_for` continues the heights to moved and
new target points, :func:`carry_over_heights` writes them into the model's residual, and
:func:`warm_start_heights` corrects them from the rows' candidate cells of the first pass: new
points placed so that each new cell starts with its target mass, then one Jacobi sweep over
every cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
    "residual_for",
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


def _smooth_motion(Y: Tensor, moved: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """The affine part of the moves ``moved`` of the points ``Y`` (least squares in float64,
    slightly ridged; the mean move alone with fewer than ``2 (d + 1)`` points or for a motion
    that is not small), and the inverse of that motion, for points placed after it."""
    n, d = Y.shape
    if n == 0 or not bool(moved.any()):
        return torch.zeros_like(moved), lambda Z: Z
    shift = moved.mean(dim=0)
    translated = shift.expand_as(moved), lambda Z: Z - shift
    if n < 2 * (d + 1):
        return translated
    center = Y.mean(dim=0)
    Yc = (Y - center).double()
    G = Yc.T @ Yc
    G += (1e-10 * float(torch.trace(G)) / d + 1e-300) * torch.eye(d, dtype=G.dtype, device=G.device)
    A = torch.linalg.solve(G, Yc.T @ (moved - shift).double())  # moved ~ Yc A + shift
    if not bool(torch.isfinite(A).all()) or float(torch.linalg.matrix_norm(A, 2)) >= 0.5:
        return translated
    inverse = torch.linalg.inv(torch.eye(d, dtype=A.dtype, device=A.device) + A)

    def back(Z: Tensor) -> Tensor:
        return ((Z - shift - center).double() @ inverse).to(Z.dtype) + center

    return (Yc @ A).to(moved.dtype) + shift, back


def heights_for(
    model: HeightModel,
    Y_old: Tensor,
    grad_old: Tensor,
    Y_new: Tensor,
    rows: Tensor,
    h_old: Tensor | None = None,
) -> Tensor:
    """Heights that continue ``model``'s heights on ``Y_old`` to the points ``Y_new``.

    ``rows[i]`` is the index in ``Y_old`` of new point ``i`` (``-1``: a new point). The
    matched points' moves are split into their affine part (least squares) and the rest. The
    affine part keeps the heights: a translated target has the same cells at the same heights
    exactly (its cost differs by terms of ``x`` alone and of ``y`` alone), and for rotations,
    scalings and shears the unchanged heights are far closer than a first-order expansion,
    whose error grows with the common move of neighbouring points. The rest moves each
    matched point's height to first order along ``grad_old`` (the height function's gradient
    at the old points), so its cell stays where it was. A new point gets the height at its
    place before the affine motion: the network's ``offset + f_theta(y)`` when the model has
    a network (after :func:`distill`, the smooth dual potential), else its old neighbours'
    first-order expansions (:func:`transfer_heights`). ``h_old`` are the old points' heights
    (default: the model's).
    """
    with torch.no_grad():
        if h_old is None:
            h_old = model(Y_old)
        matched = rows >= 0
        src = rows[matched]
        h_new = torch.empty(Y_new.shape[0], dtype=h_old.dtype, device=h_old.device)
        moved = Y_new[matched] - Y_old[src]
        smooth, back = _smooth_motion(Y_old[src], moved)
        h_new[matched] = h_old[src] + ((moved - smooth) * grad_old[src]).sum(dim=1)
        net = getattr(model, "net", None)
        fresh = back(Y_new[~matched])
        if net is not None:
            h_new[~matched] = model.offset(fresh) + net(fresh)
        else:
            h_new[~matched] = transfer_heights(Y_old, h_old, grad_old, fresh)
    return h_new


def residual_for(model: HeightModel, Y: Tensor, h: Tensor) -> Tensor:
    """The residual that gives ``model`` the heights ``h`` on ``Y`` (its offset and network,
    if any, as they are)."""
    with torch.no_grad():
        net = getattr(model, "net", None)
        rest = model.offset(Y).to(h.dtype)
        if net is not None:
            rest = rest + net(Y).to(h.dtype)
        return h - rest


def carry_over_heights(
    model: HeightModel,
    Y_old: Tensor,
    grad_old: Tensor,
    Y_new: Tensor,
    rows: Tensor,
    h_old: Tensor | None = None,
) -> None:
    """Give ``model`` a fresh residual so that its heights on ``Y_new`` are
    :func:`heights_for` (the network part, if any, is kept as it is)."""
    h_new = heights_for(model, Y_old, grad_old, Y_new, rows, h_old)
    model.residual = nn.Parameter(residual_for(model, Y_new, h_new).to(h_new.dtype))


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
    # The squared singular values and U^T c from the Gram matrix of the smaller side (a few
    # times cheaper than an SVD). Directions with s^2 below 1e-12 of the largest are left
    # in `outside`: every penalty shrinks them fully, so the scores are those of the SVD.
    tall = P.shape[0] >= P.shape[1]
    s2, V = torch.linalg.eigh(P.T @ P if tall else P @ P.T)
    s2 = s2.clamp_min(0.0)
    held = s2 > 1e-12 * float(s2.max())
    Uc = (V.T @ (P.T @ c) / s2.sqrt().clamp_min(1e-300) if tall else V.T @ c)[held]
    outside = float(c @ c - Uc @ Uc)  # the part of c no penalty can fit
    mean_s2 = float(s2.mean())
    s2 = s2[held]
    best = (math.inf, DISTILL_RIDGES[0])
    for ridge in DISTILL_RIDGES:
        shrink = ridge * mean_s2 / (s2 + ridge * mean_s2)
        residual = outside + float(((shrink * Uc) ** 2).sum())
        dof = float((1 - shrink).sum())
        score = residual / max(P.shape[0] - dof, 1.0) ** 2
        best = min(best, (score, ridge))
    return best


def distill(
    model: HeightModel, Y: Tensor, generator: torch.Generator | None = None, select: bool = True
) -> bool:
    """Fit the network of a residual model to its heights on ``Y``; the heights stay as they
    are (the residual keeps what the network does not explain).

    The network's last layer is the ridge regression of the heights' correction on its last
    hidden layer, with the Fourier frequencies and the penalty chosen by generalised
    cross-validation (on at most :data:`DISTILL_SELECTION_ROWS` targets): the network learns
    the smooth dual potential ``h(y)`` that new target points take their heights from, not
    the per-point noise, which stays in the residual. Closed form, in float64: no iterations.
    With ``select=False`` (a warm start's refit) the frequencies of the last distillation are
    kept and only the penalty is chosen. Returns whether the network was fitted (a model
    without both parts is left as it is).
    """
    net = getattr(model, "net", None)
    if net is None or getattr(model, "residual", None) is None or Y.shape[0] < 2:
        return False
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
        if not select and hasattr(net, "frequency_factor"):
            factors = (net.frequency_factor,)
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
        # Features equal on every target (targets that coincide after the standardisation):
        # nothing to learn, and any positive penalty gives the zero weights.
        penalty = penalty if penalty > 0 else 1.0
        A += penalty * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        coef = torch.linalg.solve(A, P.T @ (c - c_mean))
        last = net.layers[-1]
        last.weight.copy_(coef.to(last.weight.dtype)[None, :])
        last.bias.fill_(float(c_mean - P_mean @ coef))
        model.residual.copy_(residual_for(model, Y, c + model.offset(Y).double()))
    return True


def _rows_for(mass: float, w: Tensor) -> int:
    """Rows to look at for a cell to gain ``mass``: enough at the lightest row's weight, but at
    most four times the count at the mean weight (a few very light rows must not make every
    cell scan the whole sample; a cell then stops short, and Newton steps finish)."""
    lightest = float(w[w > 0].min())
    mean = float(w.sum()) / w.shape[0]
    rows = min(math.ceil(mass / lightest) + 1, 4 * math.ceil(mass / mean) + 16)
    return int(min(w.shape[0], rows))


def _by_cell_descending(cell: Tensor, value: Tensor) -> Tensor:
    """The order of entries grouped by increasing cell, in decreasing value within a cell
    (nan last): one stable sort of an integer key, the cell and the value's float32 bits made
    monotone (a radix sort on a CPU, where a float sort is a comparison sort). Values equal in
    float32 keep their order, which a starting height does not notice."""
    v = value.float()
    v = torch.where(torch.isnan(v), -math.inf, v)
    bits = v.view(torch.int32).long()
    rising = torch.where(bits < 0, -(bits & 0x7FFFFFFF) - 1, bits)  # increases with v
    key = cell.long() * 2**32 + (2**31 - 1 - rising)
    return key.sort(stable=True).indices


def _segment_threshold(
    cell: Tensor, value: Tensor, weight: Tensor, need: Tensor, n_cells: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per cell, the value at which the weight of its entries above it reaches ``need``.

    ``cell``, ``value``, ``weight``: one entry each (a row that is, or could be, in the cell);
    ``need``: ``(n_cells,)``. Returns the thresholds (between the entry that reaches ``need``
    and the next, in decreasing order of value; the last entry where they never reach it) and
    whether the cell has entries and whether they reached ``need``.
    """
    none = torch.zeros(n_cells, dtype=torch.bool, device=cell.device)
    if cell.numel() == 0:
        return value.new_zeros(n_cells), none, none
    order = _by_cell_descending(cell, value)
    cell, value, weight = cell[order], value[order], weight[order]
    count = torch.bincount(cell, minlength=n_cells)
    end = torch.cumsum(count, 0)
    cum = weight.double().cumsum(0)
    before = torch.where(end - count > 0, cum[(end - count - 1).clamp_min(0)], 0.0)
    reached = (cum - before[cell]) >= need.double()[cell]
    pos = torch.arange(cell.numel(), device=cell.device)
    first = torch.full((n_cells,), cell.numel(), dtype=torch.long, device=cell.device)
    first.scatter_reduce_(0, cell[reached], pos[reached], reduce="amin")
    enough = first < cell.numel()
    listed = count > 0
    first = torch.minimum(first, end - 1).clamp_min(0)
    at = value[first]
    nxt = (first + 1).clamp_max(cell.numel() - 1)
    following = torch.where(nxt < end, value[nxt], at)
    return 0.5 * (at + following), listed, enough


def insert_points(
    X: Tensor, Y: Tensor, vals: Tensor, idx: Tensor, w: Tensor, h: Tensor, nu: Tensor, new: Tensor
) -> Tensor:
    """Heights ``h`` with each point of ``new`` (a boolean mask) raised or lowered so that its
    cell would hold its target mass against the points that are not new.

    ``vals``, ``idx``: every row's best scores at ``h`` and their cells, in decreasing order
    (the candidates of a pass over ``X``). A row can enter new cell ``j`` by its gain
    ``<x, y_j> - u(x)``, ``u`` its best score among the old points; the new height is minus the
    gain at which the rows entering weigh ``nu_j``. The gains come from the candidates; a new
    point that too few rows list (its height was far too low) is scored against every row.
    """
    if not bool(new.any()) or bool(new.all()):
        return h
    is_new = new[idx]
    old = ~is_new
    first_old = old.to(torch.int8).argmax(dim=1)
    # Rows whose candidates are all new: their old best is below the last candidate.
    u = torch.where(old.any(dim=1), vals.gather(1, first_old[:, None]).squeeze(1), vals[:, -1])
    rows, ranks = is_new.nonzero(as_tuple=True)
    cell = idx[rows, ranks]
    gain = vals[rows, ranks] - h[cell] - u[rows]
    threshold, _, enough = _segment_threshold(cell, gain, w[rows], nu, h.shape[0])
    out = h.clone()
    listed = new & enough
    out[listed] = -threshold[listed].to(h.dtype)
    short = (new & ~enough).nonzero().squeeze(1)
    if short.numel():
        # Rows and columns swapped: the rows are the cells, scored by <x, y_j> - u(x).
        gain, rows = PowerCells(X, -u).top_k(Y[short], _rows_for(float(nu[short].max()), w))
        cell = short[:, None].expand_as(rows)
        threshold, _, _ = _segment_threshold(
            cell.reshape(-1), gain.reshape(-1), w[rows].reshape(-1), nu, h.shape[0]
        )
        out[short] = -threshold[short].to(h.dtype)
    return out


def refit_cells(vals: Tensor, idx: Tensor, w: Tensor, h: Tensor, nu: Tensor) -> Tensor:
    """One Jacobi sweep: every cell gets the height at which it holds its target mass, the
    other heights as they are.

    ``vals``, ``idx``: every row's best scores at ``h`` and their cells, in decreasing order
    (at least two). A cell with too much weight keeps the rows that beat their second-best
    cell by the most (its height drops by the gap of the last one kept); a cell with too
    little takes the rows that list it and need the smallest rise to enter. From the
    candidates alone (a start for Newton steps).
    """
    m = h.shape[0]
    best = idx[:, 0]
    mass = torch.zeros(m, dtype=torch.float64, device=h.device).index_add_(0, best, w.double())
    out = h.clone()
    gap = vals[:, 0] - vals[:, 1]
    drop, has, _ = _segment_threshold(best, gap, w, nu, m)
    surplus = (mass > nu.double()) & has
    out[surplus] = h[surplus] - drop[surplus].to(h.dtype)
    deficit = mass < nu.double()
    lists = deficit[idx[:, 1:]]
    rows, ranks = lists.nonzero(as_tuple=True)
    cell = idx[rows, ranks + 1]
    rise_gain = vals[rows, ranks + 1] - vals[rows, 0]  # minus the rise that lets the row in
    need = (nu.double() - mass).clamp_min(0)
    threshold, has, _ = _segment_threshold(cell, rise_gain, w[rows], need, m)
    grow = deficit & has
    out[grow] = h[grow] - threshold[grow].to(h.dtype)
    return out


#: The step of :func:`warm_start_heights`'s second Jacobi sweep.
SECOND_SWEEP = 2 / 3


def warm_start_heights(
    X: Tensor, Y: Tensor, vals: Tensor, idx: Tensor, w: Tensor, h: Tensor, nu: Tensor, new: Tensor
) -> Tensor:
    """The heights a warm start on a changed problem begins its Newton steps from.

    The new points (``new``, a boolean mask) are placed first (:func:`insert_points`); then a
    Jacobi sweep (:func:`refit_cells`) gives every cell the height at which it would hold its
    target mass with the others fixed, and a second one moves :data:`SECOND_SWEEP` of the way
    to its heights: the changes (points removed, added, moved, reweighted) are spread to their
    neighbours before the first Newton step. All read the rows' best cells at ``h``
    (``vals``, ``idx``: in decreasing order, e.g. :meth:`~._candidates.Candidates.rescored`
    over the rows ``X``), rescored at the moved heights; once new points are placed, every row
    also scores them (a row that a new point takes may not have listed it): the product of the
    rows with the new points only.
    """
    width = vals.shape[1]
    moved = insert_points(X, Y, vals, idx, w, h, nu, new)
    if width < 2:
        return moved
    if moved is not h:
        # A row that a new point takes now need not list it (its height was far too low when
        # the candidates were made): every row scores the new points at their placed heights
        # (the others did not move), and each keeps its best of them and of its old cells.
        fresh = new.nonzero().squeeze(1)
        fv, fi = PowerCells(Y[fresh], moved[fresh]).top_k(X, min(width, fresh.numel()))
        vals = torch.cat([vals.masked_fill(new[idx], -math.inf), fv], 1)
        vals, pos = vals.topk(width, dim=1)
        idx = torch.cat([idx, fresh[fi]], 1).gather(1, pos)
    swept = refit_cells(vals, idx, w, moved, nu)
    # A second sweep, damped: the first overshoots where neighbouring cells answer the same
    # change, and 2/3 of a step is Jacobi's classic weight as a smoother for such systems.
    vals = vals + (swept - moved)[idx]
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    return swept + SECOND_SWEEP * (refit_cells(vals, idx.gather(1, order), w, swept, nu) - swept)
