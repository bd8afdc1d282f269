"""Fit time and peak memory versus size: skot against POT ``ot.emd`` and ``ot.sinkhorn`` on
the same samples (n = m), then skot alone on a million source samples.

Every case runs in a fresh process (:func:`benchmarks._util.run_isolated`), so its peak
resident memory is its own.
"""

from __future__ import annotations

import itertools
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

from ._util import load_note, md_table, run_case, section_header

__all__ = ["case_pot", "case_profile", "case_skot", "make_data", "run"]

#: POT cases whose dense matrices would need more than this many GB are skipped, not
#: attempted; ``SKOT_BENCH_POT_GB`` overrides it (e.g. 20 on a quiet machine with 25 GB of RAM,
#: for ot.emd at n = m = 20,000, the size of the scale target).
POT_MEMORY_BUDGET_GB = float(os.environ.get("SKOT_BENCH_POT_GB", "6"))


def make_data(n: int, m: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Source ``N(0, I)`` samples and target samples of a shifted, shrunk Gaussian mixture."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    centres = rng.normal(size=(4, d)) * (2.0 / math.sqrt(d))
    Y = centres[rng.integers(4, size=m)] + 0.5 * rng.normal(size=(m, d))
    return X, Y


def case_pot(n: int, m: int, d: int, solver: str, reg_relative: float = 0.01) -> dict:
    """``ot.emd`` or ``ot.sinkhorn`` on uniform weights; cost = ``<P, M>``, ``M = |x - y|^2``."""
    import ot

    X, Y = make_data(n, m, d)
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    start = time.perf_counter()
    M = ot.dist(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if solver == "emd":
            P = ot.emd(a, b, M, numItermax=10**8)
        else:
            P = ot.sinkhorn(
                a, b, M, reg_relative * float(M.mean()), method="sinkhorn", numItermax=1000
            )
    seconds = time.perf_counter() - start
    tv = 0.5 * float(np.abs(P.sum(axis=0) - b).sum() + np.abs(P.sum(axis=1) - a).sum())
    return {"seconds": seconds, "cost": float((P * M).sum()), "tv": tv}


def case_skot(n: int, m: int, d: int, params: dict) -> dict:
    """``OTNetTransport.fit``; cost = mean |x - T(x)|^2 over the training sample."""
    from skot import OTNetTransport

    X, Y = make_data(n, m, d)
    est = OTNetTransport(random_state=0, **params)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, X_target=Y)
    seconds = time.perf_counter() - start
    sub = X[: min(n, 100_000)]  # the cost on at most 1e5 training points
    T = est.target_[est.predict_index(sub)]
    curve = est.marginal_error_curve_
    return {
        "seconds": seconds,
        "cost": float(((sub - T) ** 2).sum(axis=1).mean()),
        "tv": est.marginal_error_,
        "n_iter": est.n_iter_,
        "curve": curve[-50:],
    }


def _pot_gb(n: int, m: int, solver: str) -> float:
    # float64 cost matrix plus plan (emd), plus the log-domain work arrays (sinkhorn).
    return n * m * 8 * (2 if solver == "emd" else 5) / 1e9


#: Operators of a hard pass, grouped for the profile (total time, children included:
#: ``addmm`` copies its bias into the output before the product).
PROFILE_GROUPS = {
    "matrix product": ("aten::addmm", "aten::mm"),
    "row reductions": ("aten::amax", "aten::max", "aten::argmax", "aten::topk", "aten::gather"),
    "cell counts": ("aten::bincount",),
}


def case_profile(n: int, d: int, steps: int) -> dict:
    """Where a fit's time goes: ``steps`` steps of skot at n = m under ``torch.profiler``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from skot import OTNetTransport

    X, Y = make_data(n, n, d)
    est = OTNetTransport(height="vector", max_iter=steps, random_state=0)
    with warnings.catch_warnings(), profile(activities=[ProfilerActivity.CPU]) as prof:
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        est.fit(X, X_target=Y)
        seconds = time.perf_counter() - start
    totals = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages()}
    shares = {
        g: sum(totals.get(k, 0.0) for k in ops) / seconds for g, ops in PROFILE_GROUPS.items()
    }
    return {
        "seconds": seconds,
        "steps": est.n_iter_,
        "shares": shares,
        "threads": torch.get_num_threads(),
    }


def _profile_text(prof: dict, n: int, d: int, emd_seconds: float, max_iter: int) -> str:
    per_step = prof["seconds"] / max(prof["steps"], 1)
    parts = ", ".join(f"{g} {v:.0%}" for g, v in prof["shares"].items())
    other = 1 - sum(prof["shares"].values())
    text = (
        f"Profile of skot at n = m = {n:,}, d = {d} ({prof['steps']} steps under "
        f"`torch.profiler`, {prof['threads']} thread): {per_step:.2f} s per step, each one "
        f"pass over n x m = {n * n:.1e} scores; {parts}, other {other:.0%}."
    )
    if emd_seconds == emd_seconds:
        text += (
            f" 10% of ot.emd's {emd_seconds:.0f} s allows about {0.1 * emd_seconds / per_step:.0f} "
            f"such steps; the TV column says how far skot gets in {max_iter}."
        )
    return text + "\n\n"


#: Cases faster than this many seconds are run three times (each in a fresh process) and
#: the fastest kept: one run of a 1-second case measured 2.4 s once, right after ot.emd's
#: 16 GB case, against 0.9 s in every repeat.
REPEAT_BELOW_S = 5.0


def _fastest_of(func: str, kwargs: dict, timeout: float, quick: bool) -> dict:
    """:func:`run_case`, repeated for short cases; the fastest run (with its own memory)."""
    res = run_case(func, kwargs, timeout, isolated=not quick)
    if quick or res["status"] != "ok" or res["seconds"] >= REPEAT_BELOW_S:
        return res
    runs = [res] + [run_case(func, kwargs, timeout) for _ in range(2)]
    return min((r for r in runs if r["status"] == "ok"), key=lambda r: r["seconds"])


def run(quick: bool, fig_dir: Path) -> str:
    """Run the size sweep and the large skot case; return the Markdown section."""
    start, load = time.perf_counter(), load_note()
    if quick:
        sizes = {2: [150], 64: [100]}  # in-process: no memory figures
        skot_params = {"height": "vector", "max_iter": 20}
        large = [(1000, 50, 4)]
        large_params = [{"height": "vector", "max_iter": 5}]
        timeout = 120
        sinkhorn_max_n = 10**9
    else:
        # n = m = 20,000 in d = 2 is the size of the scale target.
        sizes = {2: [1000, 4000, 10000, 20000], 64: [1000, 4000, 10000]}
        skot_params = {"height": "vector", "max_iter": 300}
        large = [(1_000_000, 10_000, 64)]
        # Free heights (Newton steps: 100 samples per target) and the network (Adam steps).
        large_params = [
            {"height": "vector", "max_iter": 100},
            {"height": "network", "max_iter": 100, "hidden_layer_sizes": (256, 256)},
        ]
        timeout = 900
        sinkhorn_max_n = 4000  # 1000 iterations over a dense 1e4 x 1e4 matrix: minutes
    rows, curves = [], {}
    for d, ns in sizes.items():
        for n in ns:
            emd_cost = math.nan
            for method in ("pot-emd", "pot-sinkhorn", "skot-vector"):
                if method.startswith("pot"):
                    solver = method[4:]
                    need = _pot_gb(n, n, solver)
                    if solver == "sinkhorn" and n > sinkhorn_max_n:
                        rows.append([d, n, n, method, "skipped (time budget)", "", "", "", ""])
                        continue
                    if need > POT_MEMORY_BUDGET_GB:
                        rows.append(
                            [d, n, n, method, f"skipped (needs ~{need:.0f} GB)", "", "", "", ""]
                        )
                        continue
                    res = _fastest_of(
                        "benchmarks.scale:case_pot",
                        {"n": n, "m": n, "d": d, "solver": solver},
                        timeout,
                        quick,
                    )
                else:
                    res = _fastest_of(
                        "benchmarks.scale:case_skot",
                        {"n": n, "m": n, "d": d, "params": skot_params},
                        timeout,
                        quick,
                    )
                if res["status"] != "ok":
                    rows.append([d, n, n, method, res["status"], "", "", "", ""])
                    continue
                if method == "pot-emd":
                    emd_cost = res["cost"]
                curves[(d, n, method)] = (res["seconds"], res["peak_mb"])
                rows.append(
                    [
                        d,
                        n,
                        n,
                        method,
                        res["seconds"],
                        res["peak_mb"],
                        res["cost"] / emd_cost if emd_cost == emd_cost else math.nan,
                        res["tv"],
                        res.get("n_iter", ""),
                    ]
                )
                print("  ", rows[-1], flush=True)
    profile_n, profile_d = sizes[2][-1], 2
    prof = run_case(
        "benchmarks.scale:case_profile",
        {"n": profile_n, "d": profile_d, "steps": 5 if quick else 20},
        timeout,
        isolated=not quick,
    )
    emd_at = curves.get((profile_d, profile_n, "pot-emd"), (math.nan,))[0]
    profile_txt = (
        _profile_text(prof, profile_n, profile_d, emd_at, skot_params["max_iter"])
        if prof["status"] == "ok"
        else ""
    )
    large_rows = []
    for (n, m, d), params in itertools.product(large, large_params):
        res = run_case(
            "benchmarks.scale:case_skot",
            {"n": n, "m": m, "d": d, "params": params},
            3 * timeout,
            isolated=not quick,
        )
        row = [n, m, d, params["height"]]
        if res["status"] != "ok":
            large_rows.append([*row, res["status"], "", "", "", ""])
        else:
            per_step = res["seconds"] / max(res["n_iter"], 1)
            large_rows.append(
                [*row, res["seconds"], res["peak_mb"], res["tv"], res["n_iter"], per_step]
            )
        print("  ", large_rows[-1], flush=True)
    verdicts = []
    for d, ns in sizes.items():
        for n in ns:
            sk = next((r for r in rows if r[:4] == [d, n, n, "skot-vector"]), None)
            em = curves.get((d, n, "pot-emd"))
            if sk is None or not isinstance(sk[4], float):
                continue
            if em is None:
                verdicts.append(
                    f"- d = {d}, n = m = {n:,}: skot {sk[4]:.1f} s, {sk[5]:.0f} MB, TV "
                    f"{sk[7]:.3f} after {sk[8]} steps (ot.emd not run here, so no cost ratio)"
                )
                continue
            quality = abs(sk[6] - 1) <= 0.01 and sk[7] <= 0.01
            verdicts.append(
                f"- d = {d}, n = m = {n:,}: skot {sk[4]:.1f} s ({sk[4] / em[0]:.0%} of ot.emd's "
                f"{em[0]:.1f} s), {sk[5]:.0f} MB; cost {sk[6] - 1:+.1%} vs exact, TV {sk[7]:.3f}: "
                f"quality {'reached' if quality else 'NOT reached'}"
                + ("" if quality else f" within {sk[8]} steps")
            )
    for r in large_rows:
        if isinstance(r[4], float):
            ok = r[4] < 900 and r[5] < 2048 and r[6] <= 1e-2
            verdicts.append(
                f"- n = {r[0]:,}, m = {r[1]:,}, d = {r[2]}, {r[3]} heights: {r[4]:.0f} s, "
                f"{r[5]:.0f} MB, TV {r[6]:.3f} after {r[7]} steps: "
                f"{'met' if ok else 'not met (TV above tol)'}"
            )
    fig = _plot(curves, fig_dir / "benchmarks_scale.png")
    params_txt = ", ".join(f"{k}={v}" for k, v in skot_params.items())
    large_txt = "; ".join(", ".join(f"{k}={v}" for k, v in p.items()) for p in large_params)
    text = (
        "Source: N(0, I) samples; target: samples of a 4-mode Gaussian mixture; n = m, uniform "
        "weights, the same data for every method. Cost ratio = transport cost / `ot.emd`'s exact "
        "cost on the same samples (skot: mean |x - T(x)|^2 of its hard map on the training "
        "sample; Sinkhorn: <P, M> of its plan). TV: skot's marginal error on the whole training "
        "sample; POT: the plan's marginal violation (row plus column TV). Peak memory: peak RSS "
        "of a fresh process minus its RSS after imports. POT cases whose dense matrices would "
        f"exceed {POT_MEMORY_BUDGET_GB:.0f} GB are skipped (`SKOT_BENCH_POT_GB` sets this "
        "budget; ot.emd at n = m = 20,000 needs about 16 GB at its peak). Cases under "
        f"{REPEAT_BELOW_S:.0f} s are run three times and the fastest is shown. "
        "Sinkhorn: `ot.sinkhorn(..., method='sinkhorn')`, "
        "reg = 0.01 x mean cost, 1000 iterations at most, "
        f"run up to n = {sinkhorn_max_n:,} only (time budget). "
        f"skot settings: {params_txt}, other parameters at their defaults (tol=1e-2, "
        "batch_size=4096, learning_rate=1e-3).\n\n"
        "**Targets: same quality as ot.emd (cost within 1%, TV under 1%) in under 10% of its "
        "time and under 1 GB; n = 10^6, m = 10^4, d = 64 in under 15 minutes and 2 GB.**\n\n"
        + "\n".join(verdicts)
        + "\n\n"
        + profile_txt
        + md_table(
            ["d", "n", "m", "method", "fit (s)", "peak MB", "cost / exact", "TV", "skot steps"],
            rows,
        )
        + (f"\n![fit time and peak memory versus size]({fig})\n" if fig else "")
        + "\n### skot alone: large problem\n\n"
        f"skot settings: {large_txt} (a cap on steps so the run fits the benchmark budget; "
        "the TV column says how far it got; vector heights take Newton steps here, "
        f"{large[0][0] // large[0][1]} samples per target).\n\n"
        + md_table(
            ["n", "m", "d", "height", "fit (s)", "peak MB", "TV reached", "steps", "s / step"],
            large_rows,
        )
    )
    head = section_header(
        "Scale: time and memory versus size", quick, time.perf_counter() - start, load
    )
    return head + text


def _plot(curves: dict, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    keys = sorted({(d, meth) for d, _, meth in curves})
    for d, meth in keys:
        pts = sorted((n, v) for (dd, n, mm), v in curves.items() if dd == d and mm == meth)
        ns = [p[0] for p in pts]
        style = "-" if d == 2 else "--"
        axes[0].loglog(ns, [p[1][0] for p in pts], style, marker="o", label=f"{meth}, d={d}")
        axes[1].loglog(
            ns, [max(p[1][1], 1.0) for p in pts], style, marker="o", label=f"{meth}, d={d}"
        )
    axes[0].set(xlabel="n = m", ylabel="fit time (s)", title="Fit time")
    axes[1].set(xlabel="n = m", ylabel="peak memory above baseline (MB)", title="Peak memory")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
