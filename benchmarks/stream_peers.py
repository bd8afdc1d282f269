"""Streams against OTT-JAX: population TV versus time, from a sampler, same budget.

Both solvers draw fresh samples of N(0, I) as they go: skot by one
``fit_stream(sampler, max_time=budget)`` per budget, with the estimator's defaults (Newton
steps on the growing buffer of rows, cut at the budget), OTT-JAX by its ``SemidiscreteSolver``
steps (Adam on the dual with a fresh batch per step, the exponential moving average of the
potential as its output), its map after each jitted chunk of steps kept with the time
elapsed. Afterwards each budget's map (skot's run for it; OTT's last map finished within it)
is evaluated on fresh points, the same points for every map of a dimension. One-time costs
(imports, JIT compilation) are paid before the clock starts. Each run is a fresh process with
one thread (torch, XLA).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ._util import REPO, load_note, md_table, section_header

__all__ = ["run"]

_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _targets(d: int, m: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, size=(m, d))


def _population_tvs(Y: np.ndarray, maps: list, n_fresh: int, seed: int) -> list[float]:
    """Marginal error of each map ``argmax_j <x, y_j> + offsets_j`` on the same ``n_fresh``
    fresh N(0, I) points (float32 scores: rows within float32's resolution of a tie, a
    fraction far below the TV's digits, may go either way)."""
    import torch

    m, d = Y.shape
    rng = np.random.default_rng(seed)
    Y32 = torch.as_tensor(Y, dtype=torch.float32)
    offsets = [torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in maps]
    counts = [torch.zeros(m, dtype=torch.float64) for _ in maps]
    chunk = max(1, 2**22 // m)
    done = 0
    scores = None
    while done < n_fresh:
        k = min(chunk, n_fresh - done)
        X32 = torch.as_tensor(rng.normal(size=(k, d))).float()
        products = X32 @ Y32.T  # the same for every map: one product per chunk
        if scores is None or scores.shape[0] != k:
            scores = torch.empty_like(products)
        for a, c in zip(offsets, counts, strict=True):
            torch.add(products, a, out=scores)
            c += torch.bincount(scores.argmax(dim=1), minlength=m).double()
        done += k
    return [float(0.5 * (c / n_fresh - 1.0 / m).abs().sum()) for c in counts]


def skot_runs(d: int, m: int, budgets: list, seed: int) -> dict:
    """skot's maps: one ``fit_stream(sampler, max_time=b)`` from scratch per budget (one
    process each in the full mode), with the estimator's defaults;
    ``[(seconds, heights, samples)]``."""
    import warnings

    import torch

    from skot import OTNetTransport

    torch.set_num_threads(1)
    Y = _targets(d, m, seed)

    def sampler(n, rng):
        return rng.standard_normal(size=(n, d))

    # One-time costs (imports, the first optimiser) before the clock.
    OTNetTransport(random_state=seed).fit_stream(sampler, X_target=Y[:10], max_samples=2000)
    snaps = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in budgets:
            est = OTNetTransport(random_state=seed)
            start = time.perf_counter()
            est.fit_stream(sampler, X_target=Y, max_time=b)
            seconds = time.perf_counter() - start
            snaps.append((seconds, est.heights_.tolist(), int(est.n_samples_seen_)))
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


def _records() -> Path:
    """Where the full mode keeps each run's output as it finishes (one JSON file per run,
    named by its function and arguments), so that a run interrupted later starts again
    from the runs done: ``SKOT_STREAM_PEERS_RECORDS``, else a folder of the temporary
    directory named after the skot revision (records of other code are not reused)."""
    folder = os.environ.get("SKOT_STREAM_PEERS_RECORDS")
    if not folder:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip()
        folder = Path(tempfile.gettempdir()) / f"skot_stream_peers_{rev or 'unknown'}"
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _recorded(func: str, kwargs: dict, timeout: float) -> dict:
    """``_in_process(func, kwargs)``, read from :func:`_records` if it ran before, else run
    and written there at once."""
    key = hashlib.sha1(json.dumps([func, kwargs], sort_keys=True).encode()).hexdigest()[:16]
    path = _records() / f"{func}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = _in_process(func, kwargs, timeout)
    out["kwargs"] = kwargs
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)
    return out


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


def _at_budgets(snaps, budgets, Y, n_fresh, seed, per_budget: bool):
    """Population TV of the map of each budget: skot's run for it (``per_budget``), else
    the last map finished within it (NaN: none yet); with the samples drawn and seconds."""
    picked = []
    for i, b in enumerate(budgets):
        if per_budget:
            picked.append(snaps[i])
            continue
        done = [s for s in snaps if s[0] <= b]
        picked.append(done[-1] if done else None)
    maps = [p[1] for p in picked if p is not None]
    tvs = iter(_population_tvs(Y, maps, n_fresh, seed) if maps else [])
    return [
        (float("nan"), 0, float("nan")) if p is None else (next(tvs), p[2], p[0]) for p in picked
    ]


def _schedule(lr: float) -> str:
    return f"Adam {lr:g}" if lr > 0 else f"Adam {-lr:g} / sqrt(1 + t / 100)"


#: OTT-JAX's settings per dimension, ``(batch, Adam step size, epsilon)``, a negative step
#: size ``-a`` for ``a / sqrt(1 + t / 100)`` at step ``t``. Per dimension, the best constant
#: step size at 20 s of 1e-3, 1e-2 and 1e-1 (d = 8: 0.148, 0.025, 0.075), and the best
#: decaying one tried (40 s runs, population TV on 10^6 fresh points at 5 / 10 / 20 / 40 s):
#: d = 2: a = 1e-2 0.158 / 0.147 / 0.139 / 0.120, a = 3e-3 0.155 / 0.125 / 0.094 / 0.081,
#: (constant 3e-3: 0.208 / 0.176 / 0.143 / 0.138); d = 8: a = 0.1 0.059 / 0.055 / 0.048 / 0.040,
#: a = 0.03 0.034 / 0.030 / 0.028 / 0.024 (constant 0.03: 0.044 / 0.041 / 0.043 / 0.041);
#: d = 32: constant 3e-3 0.363 / 0.299 / 0.226 / 0.129, 0.03 0.101 / 0.036 / 0.024 / 0.023,
#: 0.1 0.036 / 0.036 / 0.036 / 0.037; a = 0.1 0.027 / 0.025 / 0.022 / 0.020.
_OTT_SETTINGS = {
    2: [(4096, 0.001, 0.0), (4096, -0.003, 0.0)],
    8: [(4096, 0.01, 0.0), (4096, -0.03, 0.0)],
    32: [(4096, 0.01, 0.0), (4096, -0.1, 0.0)],
}


def run(quick: bool, fig_dir: Path) -> str:
    """Population TV at each time budget, skot against OTT-JAX; the Markdown section."""
    start, load = time.perf_counter(), load_note()
    try:
        import ott  # noqa: F401
    except ImportError:
        ott = None
    if quick:
        problems, budgets = [(2, 20, 20_000)], [0.3, 0.6]
        ott_settings = {2: [(256, 0.01, 0.0)]}
    else:
        problems = [(2, 1000, 10_000_000), (8, 1000, 10_000_000), (32, 1000, 10_000_000)]
        budgets, ott_settings = [5.0, 10.0, 20.0, 40.0, 60.0, 120.0], _OTT_SETTINGS
    only = os.environ.get("SKOT_STREAM_PEERS_D")  # e.g. "8,32": these dimensions only
    if only:
        problems = [p for p in problems if str(p[0]) in only.split(",")]
    cut = os.environ.get("SKOT_STREAM_PEERS_BUDGETS")  # e.g. "5,10": these budgets only
    if cut:
        budgets = [float(b) for b in cut.split(",")]
    fresh_points = os.environ.get("SKOT_STREAM_PEERS_FRESH")  # fresh points per dimension
    if fresh_points:
        problems = [(d, m, int(fresh_points)) for d, m, _ in problems]
    if ott is None:  # the `peers` extra is not installed: skot's curve alone
        ott_settings = {}
    seed = 0
    table, curves, loads = [], {}, []
    for d, m, fresh in problems:
        loads.append(f"d = {d}: {os.getloadavg()[0]:.1f}")
        Y = _targets(d, m, seed)
        if quick:
            kwargs = {"d": d, "m": m, "budgets": budgets, "seed": seed}
            runs = {"skot": _in_process("skot_runs", kwargs, 3600, False)}
        else:  # one process per budget, each recorded as it ends
            snaps = []
            for b in budgets:
                kwargs = {"d": d, "m": m, "budgets": [b], "seed": seed}
                snaps += _recorded("skot_runs", kwargs, 3600)["snaps"]
            runs = {"skot": {"snaps": snaps}}
        for batch, lr, eps in ott_settings.get(d, []):
            name = f"OTT (batch {batch}, {_schedule(lr)}, eps {eps:g})"
            kwargs = dict(d=d, m=m, max_time=budgets[-1], batch=batch, lr=lr, epsilon=eps,
                          seed=seed, work=2**18 if quick else 2**25)  # fmt: skip
            if quick:
                runs[name] = _in_process("ott_curve", kwargs, 3600, False)
            else:
                runs[name] = _recorded("ott_curve", kwargs, 3600)
        for name, out in runs.items():
            values = _at_budgets(out["snaps"], budgets, Y, fresh, seed + 99, name == "skot")
            if not quick:
                tvs = {"d": d, "name": name, "budgets": budgets, "values": values}
                (_records() / f"tv-{d}-{len(curves)}.json").write_text(json.dumps(tvs))
            curves[(d, name)] = (budgets, [v for v, _, _ in values])
            cells = [f"{v:.4f} ({n:,}; {t:.1f} s)" for v, n, t in values]
            table.append([d, m, name] + cells)
    header = ["d", "m", "solver"] + [f"TV at {b:g} s" for b in budgets]
    text = section_header("Streams against OTT-JAX", quick, time.perf_counter() - start, load)
    noise = 0.4 * np.sqrt(problems[0][1] / problems[0][2])
    text += (
        "Source N(0, I), sampled fresh by each solver; m targets uniform on [-2, 2]^d, equal "
        "weights. skot: `OTNetTransport(random_state=0).fit_stream(sampler, X_target=Y, "
        "max_time=budget)`, the defaults (residual heights, batches of 4,096 rows, "
        "tol = 1e-2), one run from scratch per budget (a fresh process each); the sampler is "
        "NumPy's `rng.standard_normal`. OTT-JAX 0.6 `SemidiscreteSolver` (hard cells unless "
        "eps > 0) at two settings per dimension, the best constant Adam step size at 20 s of "
        "1e-3, 1e-2 and 1e-1 and the best decaying one tried (the tuning runs are listed in "
        "`benchmarks/stream_peers.py`), its averaged potential after each jitted chunk of "
        f"steps (about 1 s), one run of {budgets[-1]:g} s, the last map finished within each "
        "budget. Population TV: the "
        f"marginal error of the map on {problems[0][2]:,} fresh points, the same for every map "
        f"of a dimension (their own noise is about {noise:.4f}; float32 scores). In "
        "brackets: the samples drawn and the seconds the map took (skot: the whole "
        "`fit_stream` call, against its `max_time`; OTT: when the chunk "
        "finished). One thread each, fresh processes, one after the other; imports, the first "
        "optimiser and JIT compilation before the clock. 1-minute load average before each "
        "dimension: " + "; ".join(loads) + ".\n\n"
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
