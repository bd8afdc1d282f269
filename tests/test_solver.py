"""The torch core on its own: masses and gradients, the solver's result, state round trips."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skot import _solver
from skot._kernels import PowerCells, marginal_error
from skot._potentials import (
    NetworkHeights,
    ResidualHeights,
    VectorHeights,
    gaussian_offset,
    make_height_model,
    typical_spacing,
)
from skot._snapshot import state_from_dict, state_to_dict


def _masses(X, Y, h, epsilon=0.0):
    return PowerCells(Y, h).cell_sums(X, epsilon=epsilon).masses


def test_mass_gradient_is_the_energy_gradient():
    """d/dh [E_x max_j(<x,y_j> + h_j) - <nu, h>] = w(h) - nu, checked by autograd (float64)."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(500, 2, dtype=torch.float64, generator=g)
    Y = torch.randn(9, 2, dtype=torch.float64, generator=g)
    nu = torch.full((9,), 1 / 9, dtype=torch.float64)
    h = torch.randn(9, dtype=torch.float64, generator=g, requires_grad=True)
    energy = (X @ Y.T + h).max(dim=1).values.mean() - (nu * h).sum()
    (grad,) = torch.autograd.grad(energy, h)
    masses = _masses(X, Y, h.detach())
    torch.testing.assert_close(grad, masses - nu)
    # The surrogate the solver back-propagates gives the same gradient for network heights.
    model = make_height_model("network", 2, 9, (8,), generator=g).double()
    hm = model(Y)
    masses = _masses(X, Y, hm.detach())
    ((masses - nu) * hm).sum().backward()
    surrogate = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ((X @ Y.T + model(Y)).max(dim=1).values.mean() - (nu * model(Y)).sum()).backward()
    for a, p in zip(surrogate, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


def test_soft_energy_gradcheck():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 2, dtype=torch.float64, generator=g)
    Y = torch.randn(5, 2, dtype=torch.float64, generator=g)
    h = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)

    def energy(h):
        return 0.2 * torch.logsumexp((X @ Y.T + h) / 0.2, dim=1).mean()

    assert torch.autograd.gradcheck(energy, (h,))
    (grad,) = torch.autograd.grad(energy(h), h)
    masses = _masses(X, Y, h.detach(), epsilon=0.2)
    torch.testing.assert_close(grad, masses)


def test_height_models_start_at_voronoi_and_validate_sizes():
    Y = torch.randn(6, 3)
    voronoi = -0.5 * (Y**2).sum(1)
    for model in (VectorHeights(3, 6), NetworkHeights(3, (8,)), ResidualHeights(3, 6, (8,))):
        torch.testing.assert_close(model(Y), voronoi)
    with pytest.raises(ValueError, match="built for 6 target points"):
        VectorHeights(3, 6)(torch.randn(5, 3))
    with pytest.raises(ValueError, match="height must be one of"):
        make_height_model("tree", 3, 6)


def test_gaussian_offset_is_the_dual_of_the_gaussian_map():
    """Between Gaussians the offset alone is the exact OT map T(x) = A x + c."""
    g = torch.Generator().manual_seed(4)
    A_true = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    c_true = torch.tensor([3.0, -1.0], dtype=torch.float64)
    X = torch.randn(200_000, 2, dtype=torch.float64, generator=g)
    Y = X @ A_true + c_true  # A_true is symmetric positive definite: an OT map
    center, precision = gaussian_offset(X, Y)
    torch.testing.assert_close(torch.linalg.inv(precision), A_true, atol=0.02, rtol=0.02)
    torch.testing.assert_close(center, c_true, atol=0.02, rtol=0.02)


def test_typical_spacing_on_a_grid():
    grid = torch.stack(torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij"), -1)
    assert typical_spacing(grid.reshape(-1, 2) * 0.5) == pytest.approx(0.5)


def _problem(device, n=3000, m=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g).to(device)
    Y = torch.randn(m, 2, generator=g).to(device)
    nu = torch.full((m,), 1.0 / m, device=device)
    return _solver.Problem(source=X, target=Y, target_weight=nu)


@pytest.mark.parametrize(
    ("kind", "solver"),
    [
        ("vector", "adam"),
        ("network", "adam"),
        ("residual", "adam"),
        ("vector", "auto"),
        ("residual", "newton"),
    ],
)
def test_run_converges_and_resumes(device, kind, solver):
    problem = _problem(device)
    g = torch.Generator().manual_seed(0)
    model = make_height_model(kind, 2, 40, (32, 32), frequency=0.5, generator=g).to(device)
    config = _solver.SolverConfig(batch_size=512, tol=1e-2, solver=solver)
    state = _solver.init_state(model, config, torch.Generator(device=device).manual_seed(0))
    first = 30 if solver == "adam" else 2
    _solver.run(state, problem, config, max_steps=first)
    assert state.step == first and not state.converged
    assert (state.temperature is not None) == (solver != "adam")
    before = state.errors[-1][1]
    result = _solver.run(state, problem, config, max_steps=3000)  # resumes, never re-initialises
    assert state.converged and state.error <= 1e-2 < before
    assert result.converged and result.error == state.error and not result.stopped
    assert result.n_steps == state.step - first
    _check_result(result, problem, model)
    masses = _masses(problem.source, problem.target, model(problem.target))
    assert marginal_error(masses, problem.target_weight) <= 1e-2


def _check_result(result, problem, model):
    """The result's masses, sums and assignment are those of its heights, by brute force."""
    X, Y, nu = problem.source, problem.target, problem.target_weight
    with torch.no_grad():
        torch.testing.assert_close(result.heights, model(Y))
    idx = (X @ Y.T + result.heights).argmax(dim=1)
    assert torch.equal(result.assignment, idx)
    w = torch.full((X.shape[0],), 1.0 / X.shape[0], dtype=torch.float64, device=X.device)
    masses = torch.zeros(Y.shape[0], dtype=torch.float64, device=X.device).index_add_(0, idx, w)
    torch.testing.assert_close(result.masses, masses)
    sums = torch.zeros(Y.shape, dtype=torch.float64, device=X.device)
    torch.testing.assert_close(result.sums, sums.index_add_(0, idx, X.double() * w[:, None]))
    assert result.error == pytest.approx(marginal_error(masses, nu))


@pytest.mark.parametrize(("kind", "solver"), [("vector", "newton"), ("residual", "adam")])
def test_result_reuses_the_last_exact_pass(monkeypatch, kind, solver):
    """After Newton steps, and after Adam steps whose last evaluation is over the sample, the
    result takes the training rows' cells from that pass instead of a new one."""
    problem = _problem("cpu")
    model = make_height_model(kind, 2, 40, (16,), generator=torch.Generator().manual_seed(0))
    config = _solver.SolverConfig(batch_size=512, tol=1e-2, solver=solver)
    state = _solver.init_state(model, config, torch.Generator().manual_seed(0))
    given = []
    summarize = _solver.summarize

    def spy(*args, index=None, **kwargs):
        given.append(index is not None)
        return summarize(*args, index=index, **kwargs)

    monkeypatch.setattr(_solver, "summarize", spy)
    result = _solver.run(state, problem, config, max_steps=3000)
    assert result.converged
    assert given == [True]
    _check_result(result, problem, model)


def test_callback_sees_every_evaluation_and_can_stop():
    problem = _problem("cpu")
    model = make_height_model("vector", 2, 40)
    config = _solver.SolverConfig(batch_size=256, tol=0.0, solver="adam", eval_every=5)
    state = _solver.init_state(model, config, torch.Generator().manual_seed(0))
    records = []

    def callback(record):
        records.append(record)
        return len(records) == 3

    result = _solver.run(state, problem, config, max_steps=1000, callback=callback)
    assert result.stopped and not result.converged
    assert [r.step for r in records] == [5, 10, 15] == [s for s, _ in state.errors]
    assert result.n_steps == 15
    assert all(isinstance(r, _solver.StepRecord) and r.seconds >= 0 for r in records)
    assert [r.error for r in records] == [e for _, e in state.errors]


def test_state_round_trip_preserves_training(device):
    problem = _problem(device)
    config = _solver.SolverConfig(batch_size=256, tol=1e-3, solver="adam")

    def fresh():
        model = make_height_model(
            "residual", 2, 40, (16,), generator=torch.Generator().manual_seed(0)
        ).to(device)
        return _solver.init_state(model, config, torch.Generator(device=device).manual_seed(0))

    a = fresh()
    _solver.run(a, problem, config, max_steps=20)
    b = state_from_dict(state_to_dict(a), torch.device(device))
    _solver.run(a, problem, config, max_steps=15)
    _solver.run(b, problem, config, max_steps=15)
    assert a.step == b.step == 35
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_divergence_keeps_last_finite_state():
    problem = _problem("cpu", n=500, m=10)
    model = make_height_model("vector", 2, 10)
    config = _solver.SolverConfig(batch_size=100, tol=0.0, eval_every=5, solver="adam")
    state = _solver.init_state(model, config, torch.Generator().manual_seed(0))
    _solver.run(state, problem, config, max_steps=5)
    for group in state.optimizer.param_groups:
        group["lr"] = 1e300  # overflows float32 heights at once
    with pytest.raises(_solver.DivergenceError, match="diverged"):
        _solver.run(state, problem, config, max_steps=20)
    assert torch.isfinite(model.residual).all()
    masses = _masses(problem.source, problem.target, model(problem.target))
    assert torch.isfinite(masses).all()


def test_weighted_draw_follows_weights():
    X = torch.arange(4.0)[:, None]
    w = torch.tensor([0.1, 0.0, 0.6, 0.3])
    problem = _solver.Problem(source=X, target=X, target_weight=w, source_weight=w)
    draw, weights = problem.draw(40_000, torch.Generator().manual_seed(0))
    assert weights is None  # uniform over the draw (one process)
    draw = draw[:, 0].long()
    freq = np.bincount(draw.numpy(), minlength=4) / 40_000
    np.testing.assert_allclose(freq, w.numpy(), atol=0.01)
    assert freq[1] == 0


def test_newton_fit_builds_no_torch_optimiser():
    """Constructing a torch optimiser imports torch._dynamo (about a second): a fit by Newton
    steps alone (the default on small samples) never builds one."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from skot import OTNetTransport\n"
        "rng = np.random.default_rng(0)\n"
        "ot = OTNetTransport(random_state=0).fit(rng.normal(size=(3000, 2)),"
        " X_target=rng.normal(size=(20, 2)))\n"
        "assert ot.converged_\n"
        "print('torch._dynamo' in sys.modules, ot._state.optimizer.built)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_lazy_adam_round_trips_its_moments_and_step_sizes():
    from skot._potentials import make_height_model

    model = make_height_model("residual", 2, 5, (8,), 1.0, generator=torch.Generator())
    opt = _solver.make_optimizer(model, _solver.SolverConfig())
    assert not opt.built and opt.state == {}
    opt.param_groups[0]["lr"] = 0.125  # the schedule sets step sizes before any step
    before = opt.state_dict()
    fresh = _solver.make_optimizer(model, _solver.SolverConfig())
    fresh.load_state_dict(before)
    assert fresh.param_groups[0]["lr"] == 0.125 and not fresh.built
    model(torch.zeros(5, 2)).sum().backward()
    opt.step()
    assert opt.built and opt.param_groups[0]["lr"] == 0.125 and len(opt.state) > 0
    saved = opt.state_dict()
    loaded = _solver.make_optimizer(model, _solver.SolverConfig())
    loaded.load_state_dict(saved)
    assert not loaded.built  # the moments wait for the first step
    loaded.param_groups[1]["lr"] = 0.25  # set after loading: kept when the moments arrive
    loaded.zero_grad()
    model(torch.zeros(5, 2)).sum().backward()
    loaded.step()
    # The moments came back: this is the second step of every parameter.
    assert loaded.built and len(loaded.state) == len(list(model.parameters()))
    assert all(float(s["step"]) == 2.0 for s in loaded.state.values())
    assert loaded.param_groups[1]["lr"] == 0.25 and loaded.param_groups[0]["lr"] == 0.125


def test_network_output_cache_follows_every_change_of_its_inputs():
    # Without gradients the network keeps its output for the same targets and parameters;
    # fused Adam steps (which move parameters without bumping their versions), in-place
    # changes of the targets and swapped-in parameters (functional_call) all recompute it.
    from skot._potentials import _MLP

    net = _MLP(2, (8, 8), frequency=1.0, generator=torch.Generator().manual_seed(0))
    torch.nn.init.normal_(net.layers[-1].weight)
    Y = torch.randn(30, 2, generator=torch.Generator().manual_seed(1))

    def fresh():
        with torch.enable_grad():
            return net(Y).detach()

    with torch.no_grad():
        first = net(Y)
        assert net(Y) is first  # kept
    optimizer = _solver.LazyAdam([{"params": list(net.parameters()), "lr": 0.1, "initial_lr": 0.1}])
    net(Y).sum().backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(net(Y), fresh())
        assert not torch.equal(net(Y), first)
        Y.add_(0.5)
        torch.testing.assert_close(net(Y), fresh())
        swapped = {k: torch.zeros_like(v) for k, v in net.named_parameters()}
        zero = torch.func.functional_call(net, swapped, (Y,))
        torch.testing.assert_close(zero, torch.zeros(30))
        torch.testing.assert_close(net(Y), fresh())


def test_height_offset_is_kept_until_its_inputs_change():
    # The quadratic offset costs a (m, d) x (d, d) product: kept for the same targets and
    # buffers, recomputed after any in-place change, never kept with a graph, never pickled.
    import copy
    import pickle

    from skot._potentials import VectorHeights

    model = VectorHeights(3, 20)
    Y = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))

    def fresh():
        Z = Y - model.offset_center
        return -0.5 * ((Z @ model.offset_precision) * Z).sum(dim=1)

    first = model.offset(Y)
    assert model.offset(Y) is first
    model.offset_precision.mul_(2.0)
    torch.testing.assert_close(model.offset(Y), fresh())
    model.offset_center.add_(1.0)
    torch.testing.assert_close(model.offset(Y), fresh())
    Y.add_(0.5)
    torch.testing.assert_close(model.offset(Y), fresh())
    torch.testing.assert_close(model.offset(Y.clone()), fresh())
    leaf = Y.clone().requires_grad_(True)
    out = model.offset(leaf)
    assert out.requires_grad and model.offset(leaf) is not out
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(clone.offset(Y), fresh())


def _recorded_fit(X, Y, sample_weight=None, **params):
    from skot import OTNetTransport

    records = []
    est = OTNetTransport(
        height="vector",
        solver="newton",
        random_state=0,
        callbacks=[lambda est, record: records.append(record)],
        **params,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, X_target=Y, sample_weight=sample_weight)
    return est, records


def test_cold_newton_fit_starts_on_subsamples():
    # 20,000 rows for 50 targets: levels of 1,250 and 5,000 rows, then the whole sample.
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20_000, 3)), rng.normal(size=(50, 3))
    est, records = _recorded_fit(X, Y, tol=0.01)
    exact = [r.exact for r in records]
    assert not exact[0] and exact[-1] and exact == sorted(exact)
    assert [r.step for r in records] == list(range(1, len(records) + 1))
    assert est.converged_ and records[-1].error == est.marginal_error_ <= 0.01
    # The whole sample starts from the subsamples' heights, far below a cold start's error.
    assert next(r.error for r in records if r.exact) < 0.25 * records[0].error
    shares = np.bincount(est.predict_index(X), minlength=50) / 20_000
    assert 0.5 * np.abs(shares - 1 / 50).sum() == pytest.approx(est.marginal_error_, abs=1e-6)


def test_coarse_levels_hand_their_candidates_on(monkeypatch):
    # Each level's rows are among the next one's: their candidates go on (Candidates.extend
    # at their positions), so only the other rows get a full pass; the passes stay exact,
    # and the fit takes the steps it takes with fresh candidates.
    from skot import _candidates

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20_000, 3)), rng.normal(size=(50, 3))
    extend, carried = _candidates.Candidates.extend, []

    def spy(self, cells, X_next, held=None):
        taken = extend(self, cells, X_next, held)
        carried.append((self.X.shape[0], self.n_full, taken))
        return taken

    monkeypatch.setattr(_candidates.Candidates, "extend", spy)
    est, records = _recorded_fit(X, Y, tol=0.01)
    assert [(n, taken) for n, _, taken in carried] == [(5_000, True), (20_000, True)]
    assert [n_full for _, n_full, _ in carried] == [5_000 - 1_250, 20_000 - 5_000]
    monkeypatch.setattr(_solver, "_carry_candidates", lambda state, *args: None)
    fresh, fresh_records = _recorded_fit(X, Y, tol=0.01)
    assert len(records) == len(fresh_records) and est.converged_ and fresh.converged_
    np.testing.assert_allclose(est.heights_, fresh.heights_, atol=1e-5)
    assert est.marginal_error_ == pytest.approx(fresh.marginal_error_, abs=1e-4)


def test_a_fit_stopped_on_a_later_subsample_keeps_no_candidates():
    # Out of steps on the second level, which holds the first one's candidates: they are of a
    # subsample's rows and are not kept for later fits.
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(20_000, 3)), rng.normal(size=(50, 3))
    est, records = _recorded_fit(X, Y, tol=1e-3, max_iter=5)
    assert len(records) == 5 and not any(r.exact for r in records)
    assert est._state.candidates is None


@pytest.mark.parametrize("weighted", [False, True])
def test_a_fit_stopped_on_a_subsample_reports_the_whole_sample(weighted):
    # Out of steps before the whole sample: the reported error is still that of the map on
    # every training row (one pass), never the subsample's.
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(20_000, 3)), rng.normal(size=(50, 3))
    w = rng.uniform(0.5, 1.5, size=20_000) if weighted else np.ones(20_000)
    est, records = _recorded_fit(X, Y, w if weighted else None, tol=1e-3, max_iter=2)
    assert len(records) == 2 and not any(r.exact for r in records)
    assert not est.converged_
    shares = np.bincount(est.predict_index(X), weights=w, minlength=50) / w.sum()
    assert 0.5 * np.abs(shares - 1 / 50).sum() == pytest.approx(est.marginal_error_, abs=1e-6)
