"""Candidate passes (:class:`skot._candidates.Candidates`) against full top-k passes: exact on
tied integer problems whatever the heights' moves, and up to rounding on random ones."""

import pytest
import torch

from skot import _candidates
from skot._candidates import Candidates
from skot._kernels import PowerCells


def _brute_top_k(dense, k):
    """Top ``k`` by a stable sort: decreasing score, ties to the lower cell."""
    vals, idx = dense.sort(dim=1, descending=True, stable=True)
    return vals[:, :k], idx[:, :k]


def _tied_problem(device, n, m, d, seed):
    """Small integers in float64: every score is exact, whatever the order of the sums, and
    ties are frequent (repeated targets, equal heights)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(-3, 4, (n, d), generator=g).double()
    Y = torch.randint(-3, 4, (m, d), generator=g).double()
    Y[1::7] = Y[0]  # repeated target points
    h = torch.randint(-4, 5, (m,), generator=g).double()
    return X.to(device), Y.to(device), h.to(device), g


def _height_moves(m, g, device):
    """Small moves of a few cells, of many cells, a constant shift, a large move."""
    few = torch.zeros(m, dtype=torch.float64)
    few[torch.randperm(m, generator=g)[: max(1, m // 20)]] = 1.0
    many = torch.randint(-1, 2, (m,), generator=g).double() * 0.5
    big = torch.randint(-6, 7, (m,), generator=g).double()
    return [x.to(device) for x in (few, many, torch.full((m,), 3.0), 0.25 * many, big, few)]


# Row and column blocks with remainders, and one block for everything.
CANDIDATE_CASES = [(503, 40, 2**10), (503, 700, 2**13), (67, 5000, 2**14), (503, 700, 2**20)]


@pytest.mark.parametrize(("n", "m", "block_elements"), CANDIDATE_CASES)
@pytest.mark.parametrize("width", [8, 12])
def test_candidate_passes_equal_full_passes(device, n, m, block_elements, width):
    X, Y, h, g = _tied_problem(device, n, m, 3, seed=m + width)
    candidates = Candidates(PowerCells(Y, h, block_elements=block_elements), X, width)
    full_seen = []
    for move in _height_moves(m, g, device):
        h = h + move
        cells = PowerCells(Y, h, block_elements=block_elements)
        dense = torch.addmm(h, X, Y.T)
        for k in (1, 5):
            vals, idx = candidates.top_k(cells, k)
            full_seen.append(candidates.n_scores)
            ref_vals, ref_idx = _brute_top_k(dense, k)
            assert torch.equal(vals, ref_vals)
            assert torch.equal(dense.gather(1, idx), vals)  # the cells hold those scores
            assert all(len(set(row.tolist())) == k for row in idx)
            # Where no tie straddles the k-th place, the same cells as the full pass.
            clear = dense.topk(k + 1, dim=1).values.diff(dim=1)[:, -1] != 0
            assert torch.equal(idx[clear].sort(1).values, ref_idx[clear].sort(1).values)
        assert torch.equal(vals, cells.top_k(X, k)[0])
    # Small moves are certified for most rows: the cache is not a full pass in disguise.
    assert min(full_seen) < X.shape[0] * m // 4


def test_candidate_ties_go_to_the_lowest_cell(device):
    Y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], device=device)
    h = torch.zeros(4, device=device)
    X = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], device=device)
    candidates = Candidates(PowerCells(Y, h), X, width=3)
    _, idx = candidates.top_k(PowerCells(Y, h + 0.0), 1)
    assert idx[:, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_candidate_passes_match_random_problems(device, dtype, monkeypatch):
    """Random data: the certified rows agree with a full pass up to the rounding of scores."""
    monkeypatch.setattr(_candidates, "_SORT_ROWS", 97)  # row chunks with a remainder
    g = torch.Generator().manual_seed(3)
    X, Y = (torch.randn(s, 5, generator=g, dtype=dtype).to(device) for s in (1000, 600))
    h = torch.randn(600, generator=g, dtype=dtype).to(device)
    candidates = Candidates(PowerCells(Y, h, block_elements=2**14), X, 16)
    for scale in (0.3, 0.1, 0.03, 0.01):
        h = h + scale * torch.randn(600, generator=g, dtype=dtype).to(device)
        cells = PowerCells(Y, h, block_elements=2**14)
        vals, idx = candidates.top_k(cells, 8)
        ref_vals, ref_idx = cells.top_k(X, 8)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(vals, ref_vals, atol=tol, rtol=0)
        assert torch.equal(idx[:, 0], ref_idx[:, 0])
        assert torch.equal(idx.sort(1).values, ref_idx.sort(1).values)
    assert candidates.n_scores < X.shape[0] * 600 // 2
