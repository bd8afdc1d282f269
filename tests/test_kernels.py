"""Score kernels against dense torch reductions: the lane-wise row max and top-k, and the
chunked passes built on them, including ties, -inf scores and column counts that leave the
lanes padded."""

import math

import numpy as np
import pytest
import torch

from skot import _kernels
from skot._kernels import _LANE_MULTIPLE, PowerCells, _row_max, _row_topk

# Widths below, at and above the lane-wise path's threshold, with and without padding.
L = _LANE_MULTIPLE
WIDTHS = [5, 2 * L - 1, 2 * L, 4 * L + 3, 40 * L, 40 * L + 17, 10_000]


@pytest.fixture(params=["grouped", "plain"], autouse=True)
def reductions(request, monkeypatch):
    """Every test runs with the lane-wise and the plain reductions on every device."""
    grouped = {"cpu", "cuda"} if request.param == "grouped" else set()
    monkeypatch.setattr(_kernels, "GROUPED_REDUCTIONS", grouped)
    return request.param


def _scores(rows, cols, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(rows, cols, generator=g)
    s[1] = 0.5  # a row of ties everywhere
    s[2, :: max(1, cols // 7)] = 10.0  # several tied maxima
    return s.to(device)


@pytest.mark.parametrize("cols", WIDTHS)
def test_row_max_equals_torch_max_with_first_index_on_ties(device, cols):
    s = _scores(9, cols, device)
    val, idx = _row_max(s)
    ref_val, ref_idx = s.max(dim=1)
    assert torch.equal(val, ref_val)
    # Ties go to the lowest index, as PowerCells.assign documents (torch.max's CPU behaviour).
    first = (s == ref_val[:, None]).int().argmax(dim=1)
    assert torch.equal(idx, first)


@pytest.mark.parametrize("cols", WIDTHS)
@pytest.mark.parametrize("k", [1, 3, 8, 17])
def test_row_topk_equals_torch_topk(device, cols, k):
    if k > cols:
        pytest.skip("k is capped by the caller")
    s = _scores(9, cols, device)
    val, idx = _row_topk(s, k)
    ref_val, _ = s.topk(k, dim=1)
    assert torch.equal(val, ref_val)
    assert torch.equal(s.gather(1, idx), ref_val)  # indices point at those scores
    assert all(len(set(row.tolist())) == k for row in idx)  # distinct targets


@pytest.mark.parametrize("m", [3, 700, 5000])
@pytest.mark.parametrize("block_elements", [2**10, None])
def test_chunked_passes_equal_dense(device, m, block_elements):
    g = torch.Generator().manual_seed(m)
    X = torch.randn(301, 4, generator=g).to(device)
    Y = torch.randn(m, 4, generator=g).to(device)
    h = torch.randn(m, generator=g).to(device)
    dense = torch.addmm(h, X, Y.T)
    cells = PowerCells(Y, h, block_elements=block_elements)
    val, idx = cells.assign(X)
    torch.testing.assert_close(val, dense.max(dim=1).values)
    torch.testing.assert_close(dense.gather(1, idx[:, None]).squeeze(1), val)
    k = min(8, m)
    vals, index = cells.top_k(X, 8)
    ref = dense.topk(k, dim=1).values
    assert vals.shape == (301, k)
    torch.testing.assert_close(vals, ref)
    torch.testing.assert_close(dense.gather(1, index), ref)


def _diagram(device, m, d=3, n=301, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype).to(device)
    Y = torch.randn(m, d, generator=g, dtype=dtype).to(device)
    h = torch.randn(m, generator=g, dtype=dtype).to(device)
    return X, Y, h, torch.addmm(h, X, Y.T)


# One column block, several (with a remainder), and a block smaller than a row.
BLOCKS = [2**18, 2**10, 7]


def _skip_slow(m, block_elements):
    if m * 301 > 1000 * block_elements:
        pytest.skip("thousands of tiny blocks: covered by the smaller problems")


@pytest.mark.parametrize("m", [2, 13, 5000])
@pytest.mark.parametrize("block_elements", BLOCKS)
def test_power_cells_match_dense_scores(device, m, block_elements):
    _skip_slow(m, block_elements)
    X, Y, h, dense = _diagram(device, m)
    cells = _kernels.PowerCells(Y, h, block_elements=block_elements)
    val, idx = cells.assign(X)
    ref_val, ref_idx = dense.max(dim=1)
    torch.testing.assert_close(val, ref_val)
    assert torch.equal(idx, ref_idx)
    vals, index = cells.top_k(X, 4)
    torch.testing.assert_close(vals, dense.topk(min(4, m), dim=1).values)
    torch.testing.assert_close(cells.scores_at(X, index), dense.gather(1, index))


def test_power_cells_ties_go_to_the_lowest_index(device):
    Y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], device=device)
    h = torch.zeros(3, device=device)
    X = torch.tensor([[1.0, 0.0], [1.0, 1.0]], device=device)
    _, idx = _kernels.PowerCells(Y, h, block_elements=1).assign(X)
    assert idx.tolist() == [0, 0]


@pytest.mark.parametrize("m", [3, 5000])
@pytest.mark.parametrize("block_elements", BLOCKS)
@pytest.mark.parametrize("epsilon", [0.0, 0.3])
def test_cell_sums_match_dense(device, m, block_elements, epsilon):
    _skip_slow(m, block_elements)
    X, Y, h, dense = _diagram(device, m)
    g = torch.Generator().manual_seed(1)
    w = torch.rand(X.shape[0], generator=g, dtype=X.dtype).to(device)
    V = torch.randn(X.shape[0], 2, generator=g, dtype=X.dtype).to(device)
    cells = _kernels.PowerCells(Y, h, block_elements=block_elements)
    out = cells.cell_sums(X, w, V, epsilon=epsilon)
    if epsilon > 0:
        p = torch.softmax(dense / epsilon, dim=1)
        potential = (w * epsilon * torch.logsumexp(dense / epsilon, dim=1)).sum()
        assert out.index is None
    else:
        p = torch.nn.functional.one_hot(dense.argmax(dim=1), m).to(X.dtype)
        potential = (w * dense.max(dim=1).values).sum()
        assert torch.equal(out.index, dense.argmax(dim=1))
        again = cells.cell_sums(X, w, V, index=out.index)  # the known assignment: no pass
        torch.testing.assert_close(again.sums, out.sums)
    torch.testing.assert_close(out.masses.to(X.dtype), p.T @ w)
    torch.testing.assert_close(out.sums.to(X.dtype), p.T @ (V * w[:, None]))
    torch.testing.assert_close(out.potential, potential)


@pytest.mark.parametrize("m", [3, 5000])
@pytest.mark.parametrize("block_elements", BLOCKS)
def test_soft_mean_is_the_softmax_mean(device, m, block_elements):
    _skip_slow(m, block_elements)
    X, Y, h, dense = _diagram(device, m)
    cells = _kernels.PowerCells(Y, h, block_elements=block_elements)
    torch.testing.assert_close(cells.soft_mean(X, 0.2), torch.softmax(dense / 0.2, 1) @ Y)


@pytest.mark.parametrize("block_elements", BLOCKS)
def test_closest_to_enter_is_the_largest_gap(device, block_elements):
    X, Y, h, dense = _diagram(device, 40, n=97)
    cells = torch.tensor([0, 5, 39, 7], device=device)
    gap, rows = _kernels.PowerCells(Y, h, block_elements=block_elements).closest_to_enter(X, cells)
    ref = dense[:, cells] - dense.max(dim=1, keepdim=True).values
    torch.testing.assert_close(gap, ref.max(dim=0).values)
    assert torch.equal(rows, ref.argmax(dim=0))


def test_closest_to_enter_reuses_the_rows_best_scores(device):
    X, Y, h, dense = _diagram(device, 40, n=97)
    cells = torch.tensor([3, 3, 17], device=device)
    diagram = _kernels.PowerCells(Y, h)
    top, _ = diagram.assign(X)
    given = diagram.closest_to_enter(X, cells, top=top)
    for a, b in zip(given, diagram.closest_to_enter(X, cells), strict=True):
        assert torch.equal(a, b)


def test_score_rounding_bounds_the_float32_scores():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(300, 64, generator=g) * 5, torch.randn(200, 64, generator=g) + 3
    h = torch.randn(200, generator=g) * 100
    exact = X.double() @ Y.double().T + h.double()
    rounded = (X @ Y.T + h).double()
    bound = _kernels.score_rounding(X, Y, h, torch.float32)
    assert 0 < float((rounded - exact).abs().max()) <= bound
    assert _kernels.score_rounding(X, Y, h, torch.float64) < 1e-8 * bound


@pytest.mark.parametrize("block_elements", BLOCKS)
def test_best_outside_skips_each_rows_cells(device, block_elements):
    X, Y, h, dense = _diagram(device, 40, n=97)
    g = torch.Generator().manual_seed(3)
    excluded = torch.randint(0, 41, (97, 6), generator=g).to(device)  # 40: excludes nothing
    excluded[0] = torch.arange(6)  # repeated exclusions of the same cells below
    excluded[1] = 40
    excluded[2, :3] = excluded[2, 3:]
    best = _kernels.PowerCells(Y, h, block_elements=block_elements).best_outside(X, excluded)
    ref = torch.cat([dense, dense.new_full((97, 1), -math.inf)], 1)
    ref = ref.scatter(1, excluded, -math.inf).max(dim=1).values
    torch.testing.assert_close(best, ref)
    torch.testing.assert_close(best[1], dense[1].max())
    everything = torch.arange(40, device=device).expand(97, 40)
    assert torch.isneginf(PowerCells(Y, h).best_outside(X, everything)).all()


def test_block_elements_is_one_setting():
    assert _kernels.default_block_elements("cpu") == _kernels.BLOCK_ELEMENTS["cpu"]
    assert _kernels.default_block_elements(torch.device("cuda")) == _kernels.BLOCK_ELEMENTS["cuda"]


def test_top_k_puts_the_lower_cell_first_on_ties(device):
    Y = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, -1.0]], device=device)
    X = torch.tensor([[1.0, 0.0], [2.0, 0.0]], device=device)
    for order in (torch.arange(5), torch.tensor([3, 1, 0, 2, 4])):
        cells = PowerCells(Y[order], torch.zeros(5, device=device))
        tied = [i for i, j in enumerate(order.tolist()) if j in (1, 2, 3)]
        vals, idx = cells.top_k(X, 3)
        assert idx.tolist() == [tied, tied]
        assert cells.top_k(X, 1)[1].tolist() == [[tied[0]]] * 2


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_shard_columns_cover_every_target_once(size):
    m = 23
    slices = [_kernels.shard_columns(m, r, size) for r in range(size)]
    covered = np.concatenate([np.arange(m)[s] for s in slices])
    np.testing.assert_array_equal(covered, np.arange(m))
    lengths = [s.stop - s.start for s in slices]
    assert max(lengths) - min(lengths) <= 1


class _Shards:
    """The ranks of a target-sharded pass, simulated in one process: ``gather_tensor``
    returns what every rank would contribute (each computed here in turn)."""

    def __init__(self, size):
        self.size, self.rank = size, 0
        self.inputs = None

    def gather_tensor(self, tensor):
        return self.inputs.pop(0)


def _sharded_pass(X, Y, h, size, method, *args):
    """Run ``method`` of ShardedCells as every rank would and return rank 0's result."""
    contributions = []
    for rank in range(size):
        shards = _Shards(size)
        shards.rank = rank
        recorded = []
        shards.gather_tensor = lambda t, rec=recorded: rec.append(t) or [t] * size
        getattr(_kernels.ShardedCells(Y, h, shards), method)(X, *args)
        contributions.append(recorded)
    shards = _Shards(size)
    # Each gather returns the ranks' tensors of that call, in rank order.
    calls = list(zip(*contributions, strict=True))
    shards.inputs = [list(c) for c in calls]
    return getattr(_kernels.ShardedCells(Y, h, shards), method)(X, *args)


@pytest.mark.parametrize("size", [2, 3, 5])
def test_sharded_assign_equals_the_full_pass_with_ties(size):
    """Integer scores tie often: the first (lowest) cell wins, as in one full pass."""
    g = torch.Generator().manual_seed(0)
    X = torch.randint(-2, 3, (500, 3), generator=g).float()
    Y = torch.randint(-2, 3, (11, 3), generator=g).float()
    h = torch.randint(-1, 2, (11,), generator=g).float()
    vals, idx = _sharded_pass(X, Y, h, size, "assign")
    ref_vals, ref_idx = PowerCells(Y, h).assign(X)
    torch.testing.assert_close(vals, ref_vals)
    torch.testing.assert_close(idx, ref_idx)


@pytest.mark.parametrize("size", [2, 3, 5])
def test_sharded_top_k_equals_the_full_pass(size):
    g = torch.Generator().manual_seed(1)
    X, Y, h = torch.randn(500, 3, generator=g), torch.randn(11, 3, generator=g), torch.randn(11)
    vals, idx = _sharded_pass(X, Y, h, size, "top_k", 4)  # shards of 2-6 cells: padding
    ref_vals, ref_idx = PowerCells(Y, h).top_k(X, 4)
    torch.testing.assert_close(vals, ref_vals)
    torch.testing.assert_close(idx, ref_idx)


def _exact_reference(dense, k):
    """The k best of every row, ties to the lower cell, in decreasing order."""
    vals, idx = dense.sort(dim=1, descending=True, stable=True)
    return vals[:, :k], idx[:, :k]


def _integer_diagram(device, m, n=301, d=3, seed=0):
    """Small integer scores: exact in float32 and tied everywhere, at every rank."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(-2, 3, (n, d), generator=g).float().to(device)
    Y = torch.randint(-2, 3, (m, d), generator=g).float().to(device)
    h = torch.randint(-1, 2, (m,), generator=g).float().to(device)
    return X, Y, h, torch.addmm(h, X, Y.T)


@pytest.mark.parametrize("m", [13, 700, 5000])
@pytest.mark.parametrize("block_elements", [None, 2**12, 7])
@pytest.mark.parametrize("k", [1, 4, 17])
def test_top_k_takes_the_lower_cells_among_ties(device, m, block_elements, k):
    """Ties at the k-th score (integer scores): the lower cells, exactly as a stable sort of
    the dense scores, with one column block, several (rows chosen again) and tiny ones."""
    _skip_slow(m, block_elements or 2**20)
    X, Y, h, dense = _integer_diagram(device, m)
    cells = PowerCells(Y, h, block_elements=block_elements)
    vals, idx = cells.top_k(X, k)
    ref_vals, ref_idx = _exact_reference(dense, min(k, m))
    assert torch.equal(vals, ref_vals)
    assert torch.equal(idx, ref_idx)
    val, first = cells.assign(X)
    assert torch.equal(val, ref_vals[:, 0])
    assert torch.equal(first, ref_idx[:, 0])


@pytest.mark.parametrize("block_elements", [None, 2**13])
def test_top_k_with_duplicate_targets_and_infinite_heights(device, block_elements):
    """Scores tied by duplicated targets, and cells that no row can enter (height -inf, also
    among the k best when few cells are left): the same cells as a stable sort of the dense
    scores (quarter-integer coordinates: the scores are exact in float32)."""
    g = torch.Generator().manual_seed(3)
    X = torch.randint(-8, 9, (400, 8), generator=g) / 4
    Y = torch.randint(-8, 9, (1500, 8), generator=g) / 4
    Y[1000:] = Y[:500]  # the first 500 targets twice
    h = torch.randint(-64, 65, (1500,), generator=g) / 8
    h[1000:] = h[:500]
    h[::5] = -math.inf
    X, Y, h = X.to(device), Y.to(device), h.to(device)
    dense = torch.addmm(h, X, Y.T)
    cells = PowerCells(Y, h, block_elements=block_elements)
    for k in (1, 8, 17):
        vals, idx = cells.top_k(X, k)
        ref_vals, ref_idx = _exact_reference(dense, k)
        assert torch.equal(vals, ref_vals)
        assert torch.equal(idx, ref_idx)
    few = PowerCells(Y[:10], torch.full((10,), -math.inf, device=device)).top_k(X, 4)
    assert torch.equal(few[1], torch.arange(4, device=device).expand(400, 4))
    assert torch.equal(cells.assign(X)[1], dense.max(dim=1).indices)


@pytest.mark.parametrize("n", [1, 3, 64, 65, 4000, 4001])
def test_block_rows_are_balanced(n):
    """Row blocks of about equal sizes, never more than the block holds: no last block of one
    to three rows (unless there are no more), whose product rounds differently."""
    rows, cols = _kernels._block_shape(n, 10_000, 2**20)
    assert cols == 10_000 and rows * cols <= 2**20
    sizes = [min(rows, n - r0) for r0 in range(0, n, rows)]
    assert min(sizes) >= min(n, rows // 2)
    assert _kernels._block_shape(n, 10**6, 2**20)[1] == 2**16  # too wide: column blocks
