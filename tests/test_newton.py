"""Newton passes with candidates (:class:`skot._candidates.Candidates`) against full passes: the
same steps, the same cells and masses, on seeded problems (exact ties are tested on the
kernels, in integer data: after a Newton step, tied heights differ by rounding)."""

from types import SimpleNamespace

import pytest
import torch

from skot import _newton
from skot._kernels import PowerCells


class _Heights:
    """The part of a height model that the Newton pass uses: ``model(Y)`` and a residual."""

    def __init__(self, h0):
        self.h0, self.residual = h0, torch.zeros_like(h0)

    def __call__(self, Y):
        return self.h0 + self.residual


def _run(X, Y, h0, candidates, steps):
    w = X.new_full((X.shape[0],), 1.0 / X.shape[0])
    nu = Y.new_full((Y.shape[0],), 1.0 / Y.shape[0])
    state = SimpleNamespace(
        model=_Heights(h0.clone()), temperature=None, damping=1e-2, candidates=None
    )
    current = _newton.pass_at(state, X, w, Y, nu, candidates=candidates)
    passes = [current]
    for _ in range(steps):
        current = _newton.update(state, X, w, Y, nu, 1e-3, current)
        passes.append(current)
    return passes, state


# float64: in float32 the rounding of rescored scores (a reference score plus a height change)
# against freshly computed ones can flip a damping decision, and the two runs part ways;
# single float32 passes are compared in test_kernels.
@pytest.mark.parametrize("dtype", [torch.float64])
def test_newton_steps_with_candidates_equal_full_passes(device, dtype):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3000, 4, generator=g, dtype=dtype).to(device)
    Y = torch.randn(150, 4, generator=g, dtype=dtype).to(device)
    h0 = -0.5 * (Y * Y).sum(1)
    full, s_full = _run(X, Y, h0, 0, 8)
    cand, s_cand = _run(X, Y, h0, 16, 8)
    assert all(p.candidates is None for p in full)
    assert all(p.candidates is not None for p in cand)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in zip(full, cand, strict=True):
        assert a.eps == b.eps
        assert torch.equal(a.hard, b.hard)  # the same cell for every sample
        torch.testing.assert_close(a.scores, b.scores, atol=tol, rtol=0)
        torch.testing.assert_close(a.soft, b.soft, atol=tol, rtol=tol)
    torch.testing.assert_close(s_full.model.residual, s_cand.model.residual, atol=tol, rtol=tol)
    assert cand[-1].candidates.n_scores < X.shape[0] * Y.shape[0]  # later passes are partial


def test_candidates_are_dropped_for_other_rows(device):
    X = torch.randn(200, 3, dtype=torch.float64, device=device)
    Y = torch.randn(20, 3, dtype=torch.float64, device=device)
    w, nu = X.new_full((200,), 1 / 200), Y.new_full((20,), 1 / 20)
    h = torch.zeros(20, dtype=torch.float64, device=device)
    state = SimpleNamespace(model=_Heights(h), temperature=None, damping=1e-2, candidates=None)
    current = _newton.pass_at(state, X, w, Y, nu)
    other = _newton.smoothed(X[:50], w[:50], Y, h, nu, 0.1, 8, current.candidates)
    assert other.candidates is None
    ref = _newton.smoothed(X[:50], w[:50], Y, h, nu, 0.1, 8)
    assert torch.equal(other.index, ref.index)


def test_saturated_samples_leave_the_damped_system_unchanged(monkeypatch):
    # Samples certain of their cell are left out of the Hessian's products only: the direction
    # is that of the full system (the damping's diagonal keeps every sample; without them
    # the cells they fill were barely damped and Newton steps stalled at n = m).
    g = torch.Generator().manual_seed(3)
    X, Y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    w = torch.full((400,), 1 / 400)
    nu = torch.full((400,), 1 / 400)
    h = -0.5 * (Y * Y).sum(1)
    s = _newton.smoothed(X, w, Y, h, nu, 1e-4, 8)
    assert 0.2 < float((s.prob[:, 0] >= 1 - _newton.SATURATED).double().mean()) < 1
    skipped = _newton.newton_direction(s, w, nu, s.eps, 1e-2, rtol=1e-10, max_iter=500)
    monkeypatch.setattr(_newton, "SATURATED", -1.0)  # every sample in the products
    full = _newton.newton_direction(s, w, nu, s.eps, 1e-2, rtol=1e-10, max_iter=500)
    torch.testing.assert_close(skipped, full, rtol=1e-6, atol=1e-9 * float(full.abs().max()))


@pytest.mark.parametrize("after", [0, 3])
def test_dense_hessian_products_leave_the_direction_unchanged(monkeypatch, device, after):
    # After DENSE_AFTER products over the rows the conjugate gradients switch to the (m, m)
    # matrix: the same system, so the same direction up to rounding; saturated samples out
    # of it as out of the row products.
    g = torch.Generator().manual_seed(8)
    X = torch.randn(2000, 2, generator=g, dtype=torch.float64).to(device)
    Y = torch.randn(300, 2, generator=g, dtype=torch.float64).to(device)
    w, nu = X.new_full((2000,), 1 / 2000), Y.new_full((300,), 1 / 300)
    s = _newton.smoothed(X, w, Y, -0.5 * (Y * Y).sum(1), nu, 3e-3, 8)
    assert 0 < float((s.prob[:, 0] >= 1 - _newton.SATURATED).double().mean()) < 1
    rows = _newton.newton_direction(s, w, nu, s.eps, 1e-3, rtol=1e-10, max_iter=300)
    monkeypatch.setattr(_newton, "DENSE_AFTER", after)
    built = []
    dense_hessian = _newton._dense_hessian
    monkeypatch.setattr(_newton, "_dense_hessian", lambda *a: built.append(1) or dense_hessian(*a))
    dense = _newton.newton_direction(s, w, nu, s.eps, 1e-3, rtol=1e-10, max_iter=300)
    assert built == [1]
    torch.testing.assert_close(dense, rows, rtol=1e-7, atol=1e-9 * float(rows.abs().max()))
    monkeypatch.setattr(_newton, "DENSE_MAX_CELLS", 299)  # too many cells: rows only
    built.clear()
    _newton.newton_direction(s, w, nu, s.eps, 1e-3, rtol=1e-10, max_iter=300)
    assert built == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_chunks_leave_masses_energies_and_directions_unchanged(monkeypatch, device, dtype):
    # The per-sample temporaries are built in row chunks (bounded memory); chunks of 97 rows,
    # one not dividing the sample, give what one chunk of every row gives, and the scores
    # keep their values (the softmax works on a copy).
    g = torch.Generator().manual_seed(5)
    X = torch.randn(1000, 3, generator=g, dtype=dtype).to(device)
    Y = torch.randn(60, 3, generator=g, dtype=dtype).to(device)
    w, nu = X.new_full((1000,), 1 / 1000), Y.new_full((60,), 1 / 60)
    h = 0.1 * torch.randn(60, generator=g, dtype=dtype).to(device)

    def run():
        s = _newton.smoothed(X, w, Y, h, nu, 0.05, 8)
        scores = s.scores.clone()
        cooler = _newton.resmoothed(s, w, 0.01)
        assert torch.equal(s.scores, scores)
        bound = _newton.energy_bound(s.scores, w, h, nu, 0.05)
        direction = _newton.newton_direction(cooler, w, nu, 0.01, 1e-2, rtol=1e-10)
        return s, cooler, bound, direction

    one = run()
    monkeypatch.setattr(_newton, "ROW_CHUNK", 97)
    chunked = run()
    for a, b in zip(one[:2], chunked[:2], strict=True):
        torch.testing.assert_close(a.soft, b.soft, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(a.prob, b.prob, rtol=0, atol=0)
        assert a.energy == pytest.approx(b.energy, rel=1e-12)
    assert one[2] == pytest.approx(chunked[2], rel=1e-12)
    assert one[2] <= one[0].energy + 1e-12  # still a lower bound
    torch.testing.assert_close(one[3], chunked[3], rtol=1e-9, atol=1e-12)


def test_coarse_levels_grow_fourfold_to_the_sample():
    levels = _newton.coarse_levels(1_000_000, 1_000, 0.01)
    rows = [r for r, _ in levels]
    assert rows == [62_500, 250_000]  # 15,625 would be under 25 rows a target
    assert all(r >= _newton.COARSE_ROWS_PER_CELL * 1_000 for r in rows)
    tols = [t for _, t in levels]
    assert tols == sorted(tols, reverse=True) and all(t >= 0.01 for t in tols)
    assert tols[-1] == pytest.approx(_newton.COARSE_NOISE * (1_000 / 250_000) ** 0.5)
    # Too few rows per target for any level, and a tolerance above the sampling noise.
    assert _newton.coarse_levels(99_999, 1_000, 0.01) == []
    assert [t for _, t in _newton.coarse_levels(10**6, 10, 0.5)] == [0.5] * 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_candidates_bound_the_trial_energy_from_below(device, dtype):
    # The bound that refuses a trial step without a pass never exceeds the pass's energy, at
    # heights moved a little (most rows certified) or far (most not).
    g = torch.Generator().manual_seed(4)
    X = torch.randn(2000, 8, generator=g, dtype=dtype).to(device)
    Y = torch.randn(300, 8, generator=g, dtype=dtype).to(device)
    w, nu = X.new_full((2000,), 1 / 2000), Y.new_full((300,), 1 / 300)
    h = -0.5 * (Y * Y).sum(1)
    state = SimpleNamespace(model=_Heights(h), temperature=None, damping=1e-2, candidates=None)
    current = _newton.pass_at(state, X, w, Y, nu)
    for scale in [1e-3, 1e-1, 3.0]:
        moved = h + scale * torch.randn(300, generator=g, dtype=dtype).to(device)
        for eps in [current.eps, 1e-3]:
            exact = _newton.smoothed(X, w, Y, moved, nu, eps).energy
            low = []

            def keep(scores, low=low):
                low.append(scores)
                return True  # refuse: nothing scored, the candidates unchanged

            assert current.candidates.top_k(PowerCells(Y, moved), 8, keep) is None
            bound = _newton.energy_bound(low[0], w, moved, nu, eps)
            assert bound <= exact
            if scale == 1e-3:
                assert bound == pytest.approx(exact, rel=1e-4)
            # So a pass asked to refuse above its own energy never does.
            trial = _newton.smoothed(
                X, w, Y, moved, nu, eps, 8, current.candidates, refuse_above=exact
            )
            assert trial is not None and trial.energy == pytest.approx(exact, rel=1e-6)


def test_model_decrease_predicts_short_steps_and_bounds_long_ones():
    # The damping's update reads the actual over the predicted decrease: a heavily damped
    # (short) step is where the quadratic model holds (ratio near 1); the predicted
    # decrease is positive for any damping (the system is positive definite).
    g = torch.Generator().manual_seed(7)
    X = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    Y = torch.randn(100, 2, generator=g, dtype=torch.float64)
    w, nu = X.new_full((2000,), 1 / 2000), Y.new_full((100,), 1 / 100)
    h = -0.5 * (Y * Y).sum(1)
    s = _newton.smoothed(X, w, Y, h, nu, 0.05, 8)
    ratios = []
    for damping in (1e2, 1e-2):
        d = _newton.newton_direction(s, w, nu, s.eps, damping, rtol=1e-12, max_iter=500)
        predicted = _newton.model_decrease(s, w, nu, s.eps, damping, d)
        assert predicted > 0
        actual = s.energy - _newton.smoothed(X, w, Y, h + d, nu, s.eps, 8).energy
        ratios.append(actual / predicted)
    assert ratios[0] == pytest.approx(1.0, abs=0.02)
    assert 0 < ratios[1] < 1.5
