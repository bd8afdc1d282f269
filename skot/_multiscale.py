"""Coarse target levels for cold Newton fits with few source rows per target (pure torch).

With few rows per target (fewer than the smallest row subsample a cold fit starts from, see
:func:`._newton.coarse_levels`) in low dimension, Newton steps on the whole problem from the
initial heights spend most of their steps moving the heights' smooth modes, a few cells at a
time. Here the targets are clustered instead (:func:`target_levels`: by
:data:`COARSE_TARGET_FACTOR` at each level, each cluster a point at its members' barycentre
with their total weight), the coarsest problem is solved first, and each level's heights
start the next finer one (:func:`refine_heights`): every point takes its cluster's height
moved to first order (the height function's gradient at a target is minus its cell's
barycentre), then the points of a cluster share their cluster's rows by their weights (a few
scaling iterations on those rows alone). Every sum over rows goes through ``group``
(:mod:`._distributed`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ._distributed import LOCAL, LocalGroup
from ._kernels import CellSums, PowerCells

__all__ = ["TargetLevel", "refine_heights", "target_levels"]

#: Targets per cluster, on average, from one level to the next coarser one.
COARSE_TARGET_FACTOR = 4
#: The coarsest level has at least this many points (a finer level is clustered only while
#: it holds more than ``COARSE_TARGET_FACTOR`` times as many).
MIN_COARSE_TARGETS = 500
#: Fewest source rows per target for coarse target levels: with one row a target (the
#: adapter's n = m maps) they were measured no faster, their transfer leaving cells that
#: the rows cannot fill.
MIN_ROWS_PER_TARGET = 4
#: Largest dimension for coarse target levels: at n = 10^5, m = 10^4 they made the cold fit
#: about twice as fast at d = 2 but no faster at d = 4 and slower at d = 8 (where Newton
#: steps from the Gaussian start already take 10-15).
MAX_DIMENSION = 2
#: Each coarse level is solved to this marginal error (or the fit's ``tol`` if larger): the
#: transfer to the next level costs more accuracy than this.
COARSE_TARGET_TOL = 0.05
#: A coarse target level ends after this many Newton steps without a new lowest error.
COARSE_TARGET_PATIENCE = 3
#: Lloyd iterations of the clustering.
LLOYD_ITERATIONS = 4
#: Scaling iterations that share each cluster's rows among its points.
BALANCE_ITERATIONS = 30


class TargetLevel(NamedTuple):
    """A coarse level: ``points`` with weights ``weights``; ``parent[i]`` is the point of this
    level that point ``i`` of the next finer level belongs to."""

    points: Tensor
    weights: Tensor
    parent: Tensor


def _barycentres(sums: CellSums) -> Tensor:
    """Each cell's barycentre (float64) from its mass and sums (an empty cell: 0)."""
    return sums.sums / sums.masses.clamp_min(1e-300)[:, None]


def _voronoi_sums(C: Tensor, Y: Tensor, w: Tensor) -> CellSums:
    """Masses, sums and cell of the rows ``Y`` (weights ``w``) in the Voronoi cells of
    ``C``."""
    return PowerCells(C, -0.5 * (C * C).sum(dim=1)).cell_sums(Y, w, values=Y)


def _cluster(Y: Tensor, nu: Tensor, k: int, generator: torch.Generator) -> TargetLevel:
    """About ``k`` weighted clusters of the points ``Y`` by Lloyd's iterations from ``k``
    random points; empty clusters are dropped."""
    pick = torch.randperm(Y.shape[0], generator=generator, device=generator.device)[:k]
    C = Y[pick.to(Y.device)].clone()
    for _ in range(LLOYD_ITERATIONS):
        sums = _voronoi_sums(C, Y, nu)
        C = torch.where(sums.masses[:, None] > 0, _barycentres(sums).to(Y.dtype), C)
    used, parent = torch.unique(_voronoi_sums(C, Y, nu).index, return_inverse=True)
    sums = PowerCells(C[used], nu.new_zeros(used.numel())).cell_sums(Y, nu, values=Y, index=parent)
    return TargetLevel(_barycentres(sums).to(Y.dtype), sums.masses.to(nu.dtype), parent)


def target_levels(
    Y: Tensor, nu: Tensor, n_rows: int, generator: torch.Generator
) -> list[TargetLevel]:
    """The coarse levels of the targets ``Y`` (weights ``nu``) for ``n_rows`` source rows,
    finest first; empty when ``Y`` has at most ``COARSE_TARGET_FACTOR * MIN_COARSE_TARGETS``
    points, fewer than ``MIN_ROWS_PER_TARGET`` rows each or more than ``MAX_DIMENSION``
    features. The same ``generator`` state gives the same levels (on every rank of a
    distributed fit)."""
    levels: list[TargetLevel] = []
    if n_rows < MIN_ROWS_PER_TARGET * Y.shape[0] or Y.shape[1] > MAX_DIMENSION:
        return levels
    points, weights = Y, nu
    while points.shape[0] > COARSE_TARGET_FACTOR * MIN_COARSE_TARGETS:
        k = math.ceil(points.shape[0] / COARSE_TARGET_FACTOR)
        level = _cluster(points, weights, k, generator)
        levels.append(level)
        points, weights = level.points, level.weights
    return levels


def refine_heights(
    X: Tensor,
    w: Tensor,
    coarse: TargetLevel,
    h_coarse: Tensor,
    cell: Tensor,
    Y: Tensor,
    nu: Tensor,
    *,
    group: LocalGroup = LOCAL,
) -> Tensor:
    """Heights of the finer points ``Y`` (weights ``nu``) from the heights ``h_coarse`` of
    the level ``coarse`` clustered from them.

    ``cell``: the coarse cell of every row of ``X`` (weights ``w``) at ``h_coarse``. Each
    point takes its cluster's height moved to first order along minus the barycentre of the
    cluster's cell; then, on each cluster's rows only, the points' heights are scaled so that
    they share the rows in proportion to their weights (softly, at the median gap between a
    row's two best points), their weighted mean within the cluster kept.
    """
    parent, Yc = coarse.parent, coarse.points
    k, m = Yc.shape[0], Y.shape[0]
    sums = group.sum_cells(PowerCells(Yc, h_coarse).cell_sums(X, w, values=X, index=cell))
    h = h_coarse[parent] - ((Y - Yc[parent]) * _barycentres(sums).to(Y.dtype)[parent]).sum(1)
    count = torch.bincount(parent, minlength=k)
    if int(count.max()) < 2:
        return h
    # Each row's candidates: the points of its coarse cell, padded with -1.
    order = parent.argsort(stable=True)
    slot = torch.arange(m, device=Y.device) - (torch.cumsum(count, 0) - count)[parent[order]]
    members = torch.full((k, int(count.max())), -1, dtype=torch.long, device=Y.device)
    members[parent[order], slot] = order
    index = members[cell]
    valid = index >= 0
    index = index.clamp_min(0)
    scores = PowerCells(Y, h).scores_at(X, index).double().masked_fill(~valid, -math.inf)
    top = scores.topk(2, dim=1).values
    gaps = (top[:, 0] - top[:, 1])[valid.sum(dim=1) > 1]
    eps = group.median(gaps)
    if not eps > 0:
        return h
    nu64 = nu.double()
    share = nu64 * (sums.masses / coarse.weights.double())[parent]  # each point's part of its rows
    log_share = torch.log(share.clamp_min(1e-300))
    delta = torch.zeros(m, dtype=torch.float64, device=Y.device)
    flat, row_weight = index[valid], w.double()[:, None].expand_as(index)[valid]
    for _ in range(BALANCE_ITERATIONS):
        p = torch.softmax((scores + delta[index]) / eps, dim=1)[valid]
        soft = torch.zeros(m, dtype=torch.float64, device=Y.device)
        group.sum(soft.index_add_(0, flat, row_weight * p))
        step = eps * (log_share - torch.log(soft.clamp_min(1e-300)))
        delta += step.clamp(-5 * eps, 5 * eps)
        mean = torch.zeros(k, dtype=torch.float64, device=Y.device).index_add_(
            0, parent, nu64 * delta
        )
        delta -= (mean / coarse.weights.double())[parent]
    return h + delta.to(h.dtype)
