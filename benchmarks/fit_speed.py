"""Fit speed of free heights by Newton steps: full passes only (every pass a top-k over all
``n m`` scores) against candidate passes (:class:`skot._candidates.Candidates`), side by side on
the same problems, each fit in a fresh process, one torch thread; the profile of one full
pass (product against top-k and reductions) and the scaling of fit time with ``n``, ``m`` and
``d`` against the matrix-multiply roofline.

``SKOT_FIT_SPEED_LARGE=1`` adds the issue's n = 10^6, m = 10^4, d = 64 with candidate passes
(minutes), ``=both`` with full passes too (several more minutes).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ._util import load_note, md_table, run_case, section_header
from .scale import make_data
from .throughput import mm_gflops

__all__ = ["OP_ROLES", "case_fit", "case_pass_profile", "op_shares", "run"]


def case_fit(n: int, m: int, d: int, candidates: int, tol: float = 0.01, max_iter: int = 40):
    """Fit vector heights (Newton steps) with ``candidates`` per sample (0: full passes);
    time the full top-k passes, the candidate rescoring and the rest."""
    from skot import OTNetTransport, _candidates, _kernels, _newton

    torch.set_num_threads(1)
    _newton.CANDIDATES = candidates
    spent = {"full": 0.0, "candidates": 0.0, "smoothing": 0.0, "direction": 0.0}
    counts = {"passes": 0, "scores": 0}

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start

        return wrapper

    full_top_k, cand_top_k = _kernels.PowerCells.top_k, _candidates.Candidates.top_k

    def full(self, X, k):
        start = time.perf_counter()
        out = full_top_k(self, X, k)
        spent["full"] += time.perf_counter() - start
        counts["scores"] += X.shape[0] * self.n_cells
        return out

    def cand(self, cells, k, screen=None):
        start, before = time.perf_counter(), spent["full"]
        out = cand_top_k(self, cells, k, screen)
        inner = spent["full"] - before
        spent["candidates"] += time.perf_counter() - start - inner
        return out

    smoothed = _newton.smoothed

    def counted(*args, **kwargs):
        out = smoothed(*args, **kwargs)
        counts["passes"] += out is not None  # a trial refused by its candidates is no pass
        return out

    _kernels.PowerCells.top_k, _candidates.Candidates.top_k = full, cand
    _newton.smoothed = counted
    _newton.resmoothed = timed("smoothing", _newton.resmoothed)
    _newton.newton_direction = timed("direction", _newton.newton_direction)
    X, Y = make_data(n, m, d)
    est = OTNetTransport(
        height="vector", solver="newton", max_iter=max_iter, tol=tol, random_state=0
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, X_target=Y)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "tv": float(est.marginal_error_),
        "n_iter": int(est.n_iter_),
        "passes": counts["passes"],
        "full_equivalents": counts["scores"] / (n * m),
        "full_s": spent["full"],
        "candidates_s": spent["candidates"],
        "smoothing_s": spent["smoothing"],
        "direction_s": spent["direction"],
    }


def case_pass_profile(n: int, m: int, d: int, repeat: int = 2) -> dict:
    """Best-of-``repeat`` seconds of one pass of each kind at the kernels' block shape: the
    product alone (scores written into the block buffer), ``assign`` and ``top_k``."""
    from skot._kernels import PowerCells, _block_shape

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    cells = PowerCells(Y, -0.5 * (Y * Y).sum(1))
    rows, cols = _block_shape(n, m, cells.block_elements)
    buf = Y.new_empty(rows * cols)

    def product():
        for r0 in range(0, n, rows):
            for c0 in range(0, m, cols):
                cells._scores(buf, X[r0 : r0 + rows], c0, cols)

    out = {}
    for name, fn in [
        ("product", product),
        ("assign", lambda: cells.assign(X)),
        ("top_k 8", lambda: cells.top_k(X, 8)),
        ("top_k 16", lambda: cells.top_k(X, 16)),
    ]:
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        out[name] = best
    out["roofline_gflops"] = max(mm_gflops(4096, d, 4096), mm_gflops(rows, d, cols, repeat=5))
    sub = X[: min(n, 10_000)]
    for name, fn in [
        ("assign", lambda: cells.assign(sub)),
        ("top_k 8", lambda: cells.top_k(sub, 8)),
        ("top_k 16", lambda: cells.top_k(sub, 16)),
    ]:
        out["shares " + name] = op_shares(fn)
    return out


#: The operators of a pass by role, for :func:`op_shares`; every other one is bookkeeping.
OP_ROLES = {
    "product": ("aten::addmm", "aten::mm"),
    "reductions": ("aten::amax",),
    "top-k and max": ("aten::topk", "aten::max", "aten::argmax", "aten::sort"),
}


def op_shares(fn) -> dict:
    """Shares of one call of ``fn`` by operator role (:data:`OP_ROLES`, the rest
    bookkeeping), from torch's profiler (self CPU time; the profiler's own cost per operator
    is charged to them, so the small operators of bookkeeping look somewhat larger)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    times = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(times.values())
    shares = {role: sum(times.get(op, 0.0) for op in ops) / total for role, ops in OP_ROLES.items()}
    shares["bookkeeping"] = 1.0 - sum(shares.values())
    return shares


def run(quick: bool, fig_dir: Path) -> str:
    """Run the side-by-side fits, the pass profile and the scaling; return the section."""
    start, load = time.perf_counter(), load_note()
    d = 16 if quick else 64
    if quick:
        side, scaling, profile_shape = [(5000, 250, d)], [], (5000, 250, d)
    else:
        side = [(200_000, 10_000, 64)]
        large = os.environ.get("SKOT_FIT_SPEED_LARGE", "0")
        if large == "both":
            side.append((1_000_000, 10_000, 64))
        scaling = [
            (50_000, 10_000, 64),
            (100_000, 10_000, 64),
            (100_000, 2_500, 64),
            (100_000, 5_000, 64),
            (100_000, 10_000, 16),
            (100_000, 10_000, 32),
        ]
        if large == "1":
            scaling.insert(0, (1_000_000, 10_000, 64))
        profile_shape = (50_000, 10_000, 64)
    shape = dict(zip("nmd", profile_shape, strict=True))
    prof = run_case("benchmarks.fit_speed:case_pass_profile", shape, isolated=not quick)
    pn, pm, pd = profile_shape
    flop = 2.0 * pn * pm * pd
    roof = max(prof["roofline_gflops"], flop / prof["product"] / 1e9)
    prof_rows = []
    for name in ("product", "assign", "top_k 8", "top_k 16"):
        sec = prof[name]
        share = prof["product"] / sec
        parts = prof.get("shares " + name)
        parts = [parts[r] for r in (*OP_ROLES, "bookkeeping")] if parts else [1.0, 0, 0, 0]
        prof_rows.append([name, sec, flop / sec / 1e9, flop / roof / 1e9 / sec, share, *parts])
    rows, fits = [], {}
    for n, m, dd in side + scaling:
        for width in (0, 16) if (n, m, dd) in side else (16,):
            print(f"== fit_speed n={n} m={m} d={dd} candidates={width}", flush=True)
            r = run_case(
                "benchmarks.fit_speed:case_fit",
                {"n": n, "m": m, "d": dd, "candidates": width},
                timeout=3600,
                isolated=not quick,
            )
            if r.get("status") != "ok":
                rows.append([n, m, dd, width, r.get("status")] + [""] * 9)
                continue
            fits[(n, m, dd, width)] = r
            pass_s = 2.0 * n * m * dd / roof / 1e9
            other = r["seconds"] - r["full_s"] - r["candidates_s"] - r["smoothing_s"]
            other -= r["direction_s"]
            rows.append(
                [n, m, dd, width, r["seconds"], r["tv"], r["n_iter"], r["passes"],
                 r["full_equivalents"], r["full_s"], r["candidates_s"],
                 r["smoothing_s"] + r["direction_s"], other, r["seconds"] / pass_s,
                 r.get("peak_mb", float("nan"))]
            )  # fmt: skip
    header = [
        "n", "m", "d", "candidates", "fit (s)", "TV", "steps", "passes",
        "full-pass equivalents", "full top-k (s)", "candidate rescoring (s)",
        "smoothing + CG (s)", "other (s)", "fit / roofline pass", "peak MB",
    ]  # fmt: skip
    intro = (
        "Vector heights, `solver='newton'`, tol = 0.01 (TV on the whole sample), the `scale` "
        "benchmark's data (N(0, I) source, 4-mode mixture target). `candidates = 0`: every "
        "pass of a Newton step (its trials included) is a full top-k pass; `16`: the first "
        "pass keeps each sample's 16 best cells and later passes rescore them, scoring only "
        "the cells that could enter where a sample's certified bound fails (the same "
        "assignments and the same steps: the TV and step columns agree). Full-pass "
        "equivalents: scores computed over all passes / (n m). Fit / roofline pass: fit time "
        f"over the time of one product of n x d by d x m at {roof:.1f} GFLOP/s (the best "
        "torch.mm rate of this run at inner dimension d, the pass profile's product "
        "included). Each fit in a fresh process, one torch thread; peak MB is the fit's own "
        "peak resident memory.\n\n"
    )
    prof_text = (
        f"\n\n**Profile of one full pass** at n = {pn:,}, m = {pm:,}, d = {pd} (best of 2, "
        "one thread, the kernels' block shape): the product alone writes the scores into "
        "the block buffer; share of product = product time / pass time, the rest being "
        "the row reductions (max or top-k) and their bookkeeping. The last four columns "
        "split one pass over the first 10,000 rows by operator (torch's profiler, self CPU "
        "time): the product (`addmm`), the lane maxima (`amax`), `topk` / `max` / `sort`, "
        "and every other operator (gathers, index arithmetic, merges, copies).\n\n"
        + md_table(
            [
                "pass",
                "seconds",
                "GFLOP/s",
                "fraction of roofline",
                "share of product",
                "product",
                "lane maxima",
                "top-k and max",
                "bookkeeping",
            ],
            prof_rows,
        )  # fmt: skip
    )
    verdict = ""
    big = fits.get((1_000_000, 10_000, 64, 16))
    if big is not None:
        ok = big["tv"] <= 0.01 and big["seconds"] < 90 and big.get("peak_mb", 0) < 1500
        verdict = (
            f"\n\n**Target: n = 10^6, m = 10^4, d = 64 to TV <= 1% in under 90 s, one thread, "
            f"under 1.5 GB: {big['seconds']:.0f} s, TV {big['tv']:.4f}, "
            f"{big.get('peak_mb', float('nan')):.0f} MB: {'met' if ok else 'missed'}.**"
        )
    figure = _plot(fits, roof, fig_dir / "benchmarks_fit_speed.png") if fits else ""
    fig_text = f"\n\n![fit time against n m d]({figure})" if figure else ""
    return (
        section_header(
            "Fit speed: candidate passes and the roofline",
            quick,
            time.perf_counter() - start,
            load,
        )
        + intro
        + md_table(header, rows)
        + verdict
        + prof_text
        + fig_text
        + "\n"
    )


def _plot(fits: dict, roof: float, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    fig, ax = plt.subplots(figsize=(6, 4))
    for width, marker in ((16, "o"), (0, "s")):
        pts = sorted((n * m * d, r["seconds"]) for (n, m, d, w), r in fits.items() if w == width)
        if pts:
            label = "candidate passes" if width else "full passes only"
            ax.loglog(*zip(*pts, strict=True), marker=marker, linestyle="none", label=label)
    sizes = np.array(sorted({n * m * d for n, m, d, _ in fits}), dtype=float)
    if sizes.size:
        span = np.geomspace(sizes.min(), sizes.max(), 10)
        ax.loglog(span, 2 * span / roof / 1e9, "k--", label="one product at the roofline")
    ax.set(xlabel="n m d", ylabel="fit time (s)", title="Newton fit to TV 1%, one thread")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
