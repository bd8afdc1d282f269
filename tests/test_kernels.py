"""Score kernels against dense torch reductions: the two-level (grouped) row max and top-k, and
the chunked passes built on them, including ties and column counts that leave a remainder."""

import pytest
import torch

from skot import _kernels
from skot._kernels import _GROUP, _row_max, _row_topk, power_assign, top_scores

# Widths below, at and above the grouped path's threshold, with and without a remainder.
WIDTHS = [5, 4 * _GROUP - 1, 4 * _GROUP, 4 * _GROUP + 3, 40 * _GROUP, 40 * _GROUP + 17]


@pytest.fixture(params=["grouped", "plain"], autouse=True)
def reductions(request, monkeypatch):
    """Every test runs with the two-level and the plain reductions on every device."""
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
    # Ties go to the lowest index, as power_assign documents (torch.max's CPU behaviour).
    first = (s == ref_val[:, None]).int().argmax(dim=1)
    assert torch.equal(idx, first)


@pytest.mark.parametrize("cols", WIDTHS)
@pytest.mark.parametrize("k", [1, 3, 8])
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
    val, idx = power_assign(X, Y, h, block_elements=block_elements)
    torch.testing.assert_close(val, dense.max(dim=1).values)
    torch.testing.assert_close(dense.gather(1, idx[:, None]).squeeze(1), val)
    k = min(8, m)
    vals, index = top_scores(X, Y, h, 8, block_elements=block_elements)
    ref = dense.topk(k, dim=1).values
    assert vals.shape == (301, k)
    torch.testing.assert_close(vals, ref)
    torch.testing.assert_close(dense.gather(1, index), ref)
