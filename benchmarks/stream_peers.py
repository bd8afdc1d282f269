"""Streams against OTT-JAX: population TV versus time, from a sampler, same budget.

Both solvers draw fresh samples of N(0, I) as they go: skot by ``partial_fit`` calls of
``rows`` fresh rows each (vector heights: Newton steps on the growing buffer, then averaged
steps), OTT-JAX by its ``SemidiscreteSolver`` steps (Adam on the dual with a fresh batch per
step, the exponential moving average of the potential as its output). After every call (skot)
or chunk of steps (OTT) the map's heights are kept with the time elapsed; afterwards, the map
available at each budget (the last one finished within it) is evaluated on fresh points, the
same points for both. One-time costs (imports, JIT compilation) are paid before the clock
starts. Each run is a fresh process with one thread (torch, XLA).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ._util import REPO, load_note, md_table, section_header

__all__ = ["run"]

_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _targets(d: int, m: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, size=(m, d))


def _population_tv(Y: np.ndarray, offsets: np.ndarray, n_fresh: int, seed: int) -> float:
    """Marginal error of the map ``argmax_j <x, y_j> + offsets_j`` on fresh N(0, I) points."""
    import torch

    rng = np.random.default_rng(seed)
    Yt = torch.as_tensor(Y, dtype=torch.float32)
    a = torch.as_tensor(offsets, dtype=torch.float32)
    counts = torch.zeros(Y.shape[0], dtype=torch.float64)
    chunk = max(1, 2**22 // Y.shape[0])
    done = 0
    while done < n_fresh:
        k = min(chunk, n_fresh - done)
        X = torch.as_tensor(rng.normal(size=(k, Y.shape[1])), dtype=torch.float32)
        idx = torch.argmax(torch.addmm(a, X, Yt.T), dim=1)
        counts += torch.bincount(idx, minlength=Y.shape[0]).double()
        done += k
    return float(0.5 * (counts / n_fresh - 1.0 / Y.shape[0]).abs().sum())


def skot_curve(d: int, m: int, max_time: float, rows: int, seed: int) -> dict:
    """skot's snapshots: ``[(seconds, heights)]`` after each ``partial_fit`` call."""
    import warnings

    import torch

    from skot import OTNetTransport

    torch.set_num_threads(1)
    Y = _targets(d, m, seed)
    rng = np.random.default_rng(seed + 1)
    warm = OTNetTransport(height="vector", tol=1e-3, random_state=seed)
    warm.partial_fit(rng.normal(size=(rows, d)), X_target=Y[:10])  # one-time costs
    est = OTNetTransport(height="vector", tol=1e-3, random_state=seed)
    snaps, start = [], time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while time.perf_counter() - start < max_time:
            est.partial_fit(rng.normal(size=(rows, d)), X_target=Y)
            snaps.append((time.perf_counter() - start, est.heights_.tolist(), est.n_samples_seen_))
    return {"snaps": snaps}


def ott_curve(
    d: int,
    m: int,
    max_time: float,
    batch: int,
    lr: float,
    epsilon: float,
    seed: int,
    work: int = 2**25,
) -> dict:
    """OTT-JAX's snapshots: ``[(seconds, offsets)]`` after each jitted chunk of steps, the
    offsets ``(g_j - |y_j|^2) / 2`` of its hard map (cost ``|x - y|^2``)."""
    import jax
    import jax.numpy as jnp
    import optax
    from ott.geometry.semidiscrete_pointcloud import SemidiscretePointCloud
    from ott.problems.linear.semidiscrete_linear_problem import SemidiscreteLinearProblem
    from ott.solvers.linear.semidiscrete import SemidiscreteSolver, SemidiscreteState

    Y = _targets(d, m, seed)
    y = jnp.asarray(Y, dtype=jnp.float32)

    def sampler(key, shape, dtype):
        return jax.random.normal(key, shape, dtype)

    prob = SemidiscreteLinearProblem(SemidiscretePointCloud(sampler, y, epsilon=epsilon))
    # lr > 0: Adam at a constant step size; lr < 0: Adam at |lr| / sqrt(1 + step / 100).
    schedule = lr if lr > 0 else (lambda t: -lr / jnp.sqrt(1.0 + t / 100.0))
    optimizer = optax.adam(schedule)
    solver = SemidiscreteSolver(num_iterations=1, batch_size=batch, optimizer=optimizer)
    steps = max(1, work // (batch * m))  # work = batch x m per chunk (2**25: about 1 s)

    @jax.jit
    def chunk(state, key):
        def body(i, st):
            return solver.step(jax.random.fold_in(key, st.it), st, prob)

        return jax.lax.fori_loop(0, steps, body, state)

    def fresh():
        g = jnp.zeros(m, dtype=jnp.float32)
        inf = jnp.full((1,), jnp.inf, dtype=jnp.float32)
        return SemidiscreteState(
            it=jnp.array(0), epsilon=jnp.array(epsilon, dtype=jnp.float32), g=g, g_ema=g,
            opt_state=solver.optimizer.init(g), losses=inf, grad_norms=inf, errors=inf,
        )  # fmt: skip

    key = jax.random.key(seed)
    jax.block_until_ready(chunk(fresh(), key))  # compile before the clock starts
    state, snaps, start, k = fresh(), [], time.perf_counter(), 0
    sq = (Y**2).sum(1)
    while time.perf_counter() - start < max_time:
        state = jax.block_until_ready(chunk(state, jax.random.fold_in(key, k)))
        k += 1
        g = np.asarray(state.g_ema, dtype=np.float64)
        snaps.append((time.perf_counter() - start, ((g - sq) / 2).tolist(), k * steps * batch))
    return {"snaps": snaps}


def _in_process(func: str, kwargs: dict, timeout: float, isolated: bool = True) -> dict:
    """``func(**kwargs)`` in a fresh one-thread Python process (JSON in, JSON out), or here
    with ``isolated=False`` (the quick mode: no process start-up)."""
    if not isolated:
        return globals()[func](**kwargs)
    code = (
        "import json, sys; from benchmarks import stream_peers as s; "
        f"print(json.dumps(getattr(s, {func!r})(**json.loads(sys.argv[1]))))"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", XLA_FLAGS=_XLA_ONE_THREAD)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{func} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _at_budgets(snaps, budgets, Y, n_fresh, seed):
    """Population TV of the last map finished within each budget (NaN: none yet)."""
    rows = []
    for b in budgets:
        done = [s for s in snaps if s[0] <= b]
        if not done:
            rows.append((float("nan"), 0))
            continue
        t, offsets, samples = done[-1]
        rows.append((_population_tv(Y, np.asarray(offsets), n_fresh, seed), samples))
    return rows


def run(quick: bool, fig_dir: Path) -> str:
    """Population TV at each time budget, skot against OTT-JAX; the Markdown section."""
    start, load = time.perf_counter(), load_note()
    try:
        import ott  # noqa: F401
    except ImportError:
        ott = None
    if quick:
        problems, budgets, rows = [(2, 20, 20_000)], [0.3, 0.6], 1000
        ott_settings = [(256, 0.01, 0.0)]
    else:
        problems = [(2, 1000, 2_000_000)]
        budgets, rows = [5.0, 10.0, 20.0, 40.0, 60.0, 120.0], 10_000
        ott_settings = [(4096, 0.001, 0.0)]
    if ott is None:  # the `peers` extra is not installed: skot's curve alone
        ott_settings = []
    seed = 0
    table, curves = [], {}
    for d, m, fresh in problems:
        Y = _targets(d, m, seed)
        kwargs = {"d": d, "m": m, "max_time": budgets[-1], "rows": rows, "seed": seed}
        runs = {"skot": _in_process("skot_curve", kwargs, 3600, not quick)}
        for batch, lr, eps in ott_settings:
            name = f"OTT (batch {batch}, Adam {lr:g}, eps {eps:g})"
            kwargs = dict(d=d, m=m, max_time=budgets[-1], batch=batch, lr=lr, epsilon=eps,
                          seed=seed, work=2**18 if quick else 2**25)  # fmt: skip
            runs[name] = _in_process("ott_curve", kwargs, 3600, not quick)
        for name, out in runs.items():
            values = _at_budgets(out["snaps"], budgets, Y, fresh, seed + 99)
            curves[(d, name)] = (budgets, [v for v, _ in values])
            table.append([d, m, name] + [f"{v:.4f} ({s:,})" for v, s in values])
    header = ["d", "m", "solver"] + [f"TV at {b:g} s (samples)" for b in budgets]
    text = section_header("Streams against OTT-JAX", quick, time.perf_counter() - start, load)
    text += (
        "Source N(0, I), sampled fresh by each solver; m targets uniform on [-2, 2]^d, equal "
        f"weights. skot: `partial_fit` calls of {rows:,} fresh rows, vector heights, "
        "tol = 1e-3. OTT-JAX 0.6 `SemidiscreteSolver` (hard cells unless eps > 0), its "
        "averaged potential. Population TV: the marginal error of the map on "
        f"{problems[0][2]:,} fresh points (their own noise is about "
        f"{0.4 * np.sqrt(problems[0][1] / problems[0][2]):.4f}), for the last map finished "
        "within each budget; in brackets, the samples drawn by then. One thread each, fresh "
        "processes, one after the other; JIT compilation and imports before the clock.\n\n"
    )
    if ott is None:
        text += "OTT-JAX is not installed (`pip install skot[peers]`): skot's rows only.\n\n"
    text += md_table(header, table)
    fig = _figure(curves, fig_dir, quick)
    return text + (f"\n![population TV versus time]({fig})\n" if fig else "")


def _figure(curves, fig_dir, quick) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    dims = sorted({d for d, _ in curves})
    fig, axes = plt.subplots(1, len(dims), figsize=(5 * len(dims), 3.6), squeeze=False)
    for ax, d in zip(axes[0], dims, strict=True):
        for (dd, name), (t, tv) in curves.items():
            if dd == d:
                ax.plot(t, tv, marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel="seconds", ylabel="population TV")
        ax.set_title(f"d = {d}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    name = "benchmarks_stream_peers.png"
    fig.savefig(Path(fig_dir) / name, dpi=80 if quick else 100)
    plt.close(fig)
    return name
