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


def test_rows_that_fail_the_bound_but_keep_their_cells_stay_exact(device, monkeypatch):
    """A few far cells rise by more than most rows' margins: those rows fail the certificate,
    are scored against the risen cells, and keep their candidates (rebased at the new heights,
    no merge); the passes that follow still equal full passes."""
    kept = []
    keep = Candidates._keep_unbeaten

    def counted(self, rows, *args):
        rest = keep(self, rows, *args)
        kept.append(rows.numel() - rest.numel())
        return rest

    monkeypatch.setattr(Candidates, "_keep_unbeaten", counted)
    X, Y, h, g = _tied_problem(device, 503, 700, 3, seed=11)
    candidates = Candidates(PowerCells(Y, h), X, 12)
    far = (Y.norm(dim=1) == Y.norm(dim=1).max()).nonzero().squeeze(1)[:3]
    for move in (2.0, 1.0, -1.0, 0.5):
        h = h.clone()
        h[far] += move
        h[torch.randperm(700, generator=g)[:20].to(device)] += 0.5
        cells = PowerCells(Y, h)
        vals, idx = candidates.top_k(cells, 5)
        ref_vals, ref_idx = _brute_top_k(torch.addmm(h, X, Y.T), 5)
        assert torch.equal(vals, ref_vals)
        assert torch.equal(vals, cells.top_k(X, 5)[0])
    assert sum(kept) > X.shape[0]  # the path was taken, for many rows


def _changes(Y, g):
    """Changed targets ``(Y_new, previous)``: removed, replaced, permuted, moved (integer
    moves: scores stay exact), duplicated, and all at once."""
    m, d = Y.shape
    ids = torch.arange(m)
    perm = torch.randperm(m, generator=g)
    shift = torch.randint(-1, 2, (m, d), generator=g).double()
    new = torch.randint(-3, 4, (m // 5, d), generator=g).double()
    keep = perm[m // 10 :]
    return {
        "removed": (Y[keep], ids[keep]),
        "replaced": (torch.cat([Y[keep], new]), torch.cat([ids[keep], -torch.ones(len(new))])),
        "permuted": (Y[perm], ids[perm]),
        "translated": (Y + torch.tensor([1.0] + [0.0] * (d - 1)), ids),
        "moved": (Y + shift * (torch.rand(m, 1, generator=g) < 0.3), ids),
        "duplicated": (torch.cat([Y, Y[:5]]), torch.cat([ids, ids[:5]])),
        "everything": (
            torch.cat([(Y + shift)[perm[m // 10 :]], new]),
            torch.cat([ids[perm[m // 10 :]], -torch.ones(len(new))]),
        ),
    }


@pytest.mark.parametrize(
    "change",
    ["removed", "replaced", "permuted", "translated", "moved", "duplicated", "everything"],
)
@pytest.mark.parametrize(("n", "m", "block_elements"), [(503, 40, 2**10), (503, 700, 2**13)])
def test_retargeted_candidates_equal_full_passes(device, change, n, m, block_elements):
    """After a change of target (and heights that move before and after it), candidate passes
    give the top ``k`` of a full pass on the new target, with fewer scores than a full pass
    for small changes."""
    X, Y, h, g = _tied_problem(device, n, m, 3, seed=m)
    candidates = Candidates(PowerCells(Y, h, block_elements=block_elements), X, 12)
    for move in _height_moves(m, g, device)[:2]:  # references of several heights
        h = h + move
        candidates.top_k(PowerCells(Y, h, block_elements=block_elements), 5)
    Y_new, previous = _changes(Y.cpu(), g)[change]
    Y_new, previous = Y_new.to(device), previous.long().to(device)
    carried = torch.where(previous >= 0, h[previous.clamp_min(0)], 0.0)
    h_new = carried + torch.randint(-1, 2, (len(Y_new),), generator=g).double().to(device)
    cells = PowerCells(Y_new, h_new, block_elements=block_elements)
    candidates.retarget(Y, cells, previous)
    assert candidates.min_valid >= 6
    m_new = Y_new.shape[0]
    for move in [torch.zeros(m_new, dtype=torch.float64, device=device)] + _height_moves(
        m_new, g, device
    ):
        h_new = h_new + move
        cells = PowerCells(Y_new, h_new, block_elements=block_elements)
        dense = torch.addmm(h_new, X, Y_new.T)
        # Moved points' reference heights are lowered by irrational amounts: scores are exact
        # up to the rounding of a reference score plus a move.
        close = {"atol": 1e-12, "rtol": 0}
        for k in (1, 5):
            vals, idx = candidates.top_k(cells, k)
            torch.testing.assert_close(vals, _brute_top_k(dense, k)[0], **close)
            torch.testing.assert_close(dense.gather(1, idx), vals, **close)
            assert all(len(set(row.tolist())) == k for row in idx)
        rv, ri = candidates.rescored(cells, 6)
        torch.testing.assert_close(dense.gather(1, ri), rv, **close)  # a start: real scores
        assert bool((rv[:, :-1] >= rv[:, 1:] - 1e-12).all())


def test_retarget_without_moves_makes_no_full_pass(device):
    X, Y, h, g = _tied_problem(device, 503, 700, 3, seed=5)
    candidates = Candidates(PowerCells(Y, h), X, 16)
    keep = torch.randperm(700, generator=g)[:630].to(device)
    candidates.retarget(Y, PowerCells(Y[keep], h[keep]), keep)
    assert candidates.n_full == 0 and candidates.n_scores == 0
    vals, _ = candidates.top_k(PowerCells(Y[keep], h[keep]), 8)
    assert torch.equal(vals, _brute_top_k(torch.addmm(h[keep], X, Y[keep].T), 8)[0])
    assert candidates.n_full < 503 // 4


def test_retarget_with_every_reference_in_use_passes_only_the_short_rows(device):
    # Rows that lose most of their candidates get a pass; with no free reference the
    # fewest-used one moves to the current heights instead of every row getting a pass.
    X, Y, h, _ = _tied_problem(device, 503, 700, 3, seed=7)
    candidates = Candidates(PowerCells(Y, h), X, 12, max_references=1)
    keep = torch.ones(700, dtype=torch.bool, device=device)
    keep[candidates.index[0].long()] = False  # row 0 and its neighbours lose their cells
    keep = keep.nonzero().squeeze(1)
    candidates.retarget(Y, PowerCells(Y[keep], h[keep]), keep)
    assert 5 <= candidates.n_full < 503 // 4
    for move in [0.0, 0.5]:
        h_new = h[keep] + move * (Y[keep, 0] > 0)
        vals, idx = candidates.top_k(PowerCells(Y[keep], h_new), 5)
        assert torch.equal(vals, _brute_top_k(torch.addmm(h_new, X, Y[keep].T), 5)[0])


def test_candidates_cover_equal_rows_only(device):
    X, Y, h, _ = _tied_problem(device, 50, 30, 3, seed=1)
    candidates = Candidates(PowerCells(Y, h), X, 8)
    copy = X.clone()
    assert candidates.covers(copy, 30) and candidates.X is copy
    assert not candidates.covers(X, 29)
    assert not candidates.covers(X[:-1], 30)
    assert not candidates.covers(X + 1, 30)
    assert not candidates.covers(X.float(), 30)


@pytest.mark.parametrize("held_at", ["prefix", "spread"])
@pytest.mark.parametrize("max_references", [1, 8])
def test_extended_candidates_equal_full_passes(device, max_references, held_at, monkeypatch):
    # The rows held are among the new ones: the first (a stream's buffer grown) or anywhere
    # (a cold fit's subsample in the next level). The other rows get a full pass at the
    # current heights (in row chunks, here with a remainder), the held ones keep their
    # bounds, and every later pass is exact. With one reference the held rows first move
    # to the current heights.
    monkeypatch.setattr(_candidates, "_SORT_ROWS", 97)
    X, Y, h, g = _tied_problem(device, 900, 300, 3, seed=5)
    first = 400
    held = (
        None
        if held_at == "prefix"
        else torch.randperm(900, generator=g)[:first].sort().values.to(device)
    )
    start = X[:first] if held is None else X[held]
    candidates = Candidates(PowerCells(Y, h), start, 8, max_references=max_references)
    moves = _height_moves(300, g, device)
    for step, move in enumerate(moves):
        h = h + move
        cells = PowerCells(Y, h)
        if step == 2:
            assert not candidates.extend(cells, start.clone() + 1)  # not its rows
            assert not candidates.extend(cells, X[: first - 1])
            if held is not None:
                assert not candidates.extend(cells, X)  # its rows, but not the first ones
                assert not candidates.extend(cells, X, held[:-1])
                assert candidates.X is start
            assert candidates.extend(cells, X, held)
            assert candidates.X is X and candidates.n_full == X.shape[0] - first
            assert Candidates.kept_or_new(candidates, cells, X, 8) is candidates
        rows = candidates.X
        vals, idx = candidates.top_k(cells, 5)
        ref_vals, _ = _brute_top_k(torch.addmm(h, rows, Y.T), 5)
        assert torch.equal(vals, ref_vals)
    assert candidates.X.shape[0] == X.shape[0]
