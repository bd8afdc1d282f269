"""Reuse: warm starts on changed targets against cold starts, and streaming ``partial_fit``.

``python -m benchmarks --full --only reuse`` (or ``python -m benchmarks.reuse [--quick]``).

For each height parameterisation and each change of a target of ``m`` points (10% of them
replaced by new points; every point moved by a small drift, matched by ``target_ids`` or
not; a re-weighting; a fresh draw from the same distribution), it fits the original target,
then measures the steps and seconds to reach the same tolerance on the changed target from
that fit (``warm_start=True``) and from scratch. The streaming case feeds 10^6 source samples
to ``partial_fit`` in batches drawn from a generator and reports the peak memory of a fresh
process and the marginal error of the streamed map on fresh samples.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ._util import load_note, md_table, run_case, section_header

__all__ = ["run", "streaming_case", "warm_versus_cold"]

CHANGES = ("10% new points", "drift, by id", "drift, by coordinates", "reweight", "new draw")
HEIGHTS = ("vector", "residual", "network")


def _changed(change: str, Y: np.ndarray, rng: np.random.Generator):
    """(new target, its weights or None, ids of old points, ids of new points or None)."""
    m, d = Y.shape
    ids = np.arange(m)
    if change == "10% new points":
        k = max(1, m // 10)
        Y2 = np.vstack([Y[k:], rng.uniform(-2, 2, size=(k, d))])
        return Y2, None, ids, np.r_[ids[k:], np.arange(m, m + k)]
    if change.startswith("drift"):
        Y2 = Y + 0.05 * rng.standard_normal(size=Y.shape)
        return Y2, None, ids, (ids if change.endswith("by id") else None)
    if change == "reweight":
        w = rng.uniform(0.5, 1.5, size=m)
        return Y, w / w.sum(), ids, ids
    return rng.uniform(-2, 2, size=Y.shape), None, ids, None


def warm_versus_cold(height: str, d: int, m: int, n: int, quick: bool) -> list[list]:
    """Rows of the warm-versus-cold table for one height and dimension."""
    from skot import OTNetTransport

    rng = np.random.default_rng(0)
    X = rng.standard_normal(size=(n, d))
    Y = rng.uniform(-2, 2, size=(m, d))
    params = {"height": height, "random_state": 0, "max_iter": 3000}
    if quick:
        params["hidden_layer_sizes"] = (16, 16)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = OTNetTransport(warm_start=True, **params).fit(X, X_target=Y, target_ids=np.arange(m))
        for change in CHANGES:
            Y2, w2, _, ids2 = _changed(change, Y, np.random.default_rng(1))
            t = time.perf_counter()
            cold = OTNetTransport(**params).fit(X, X_target=Y2, target_weight=w2)
            cold_s = time.perf_counter() - t
            warm = copy.deepcopy(base)
            before = warm.n_iter_
            t = time.perf_counter()
            warm.fit(X, X_target=Y2, target_weight=w2, target_ids=ids2)
            warm_s = time.perf_counter() - t
            warm_steps = warm.n_iter_ - before
            start_error = next(e for s, e in warm.marginal_error_curve_ if s > before)
            rows.append(
                [
                    d,
                    height,
                    change,
                    start_error,
                    f"{cold.n_iter_}" + ("" if cold.converged_ else " (not converged)"),
                    f"{warm_steps}" + ("" if warm.converged_ else " (not converged)"),
                    warm_steps / cold.n_iter_,
                    cold_s,
                    warm_s,
                    warm_s / cold_s,
                ]
            )
            print("  " + " | ".join(str(v) for v in rows[-1]), flush=True)
    return rows


def streaming_case(n_total: int, chunk: int, d: int, m: int, n_test: int) -> dict:
    """Stream ``n_total`` samples through ``partial_fit``; run in a fresh process."""
    from skot import OTNetTransport

    rng = np.random.default_rng(0)
    Y = rng.uniform(-2, 2, size=(m, d))
    est = OTNetTransport(height="network", batch_size=4096, random_state=0)
    t = time.perf_counter()
    for _ in range(n_total // chunk):
        est.partial_fit(rng.standard_normal(size=(chunk, d)), X_target=Y)
    seconds = time.perf_counter() - t
    test = rng.standard_normal(size=(n_test, d))
    return {"seconds": seconds, "steps": est.n_iter_, "tv": -est.score(test)}


def full_fit_case(n: int, d: int, m: int, n_test: int) -> dict:
    from skot import OTNetTransport

    rng = np.random.default_rng(0)
    Y = rng.uniform(-2, 2, size=(m, d))
    X = rng.standard_normal(size=(n, d))
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = OTNetTransport(height="network", random_state=0).fit(X, X_target=Y)
    seconds = time.perf_counter() - t
    test = np.random.default_rng(1).standard_normal(size=(n_test, d))
    return {"seconds": seconds, "steps": est.n_iter_, "tv": -est.score(test)}


def run(quick: bool, fig_dir: Path | None = None) -> str:
    """Run the reuse benchmark; return its Markdown section."""
    start, load = time.perf_counter(), load_note()
    dims, m, n = ((2,), 30, 2000) if quick else ((2, 32), 1000, 20_000)
    rows = []
    for d in dims:
        for height in HEIGHTS:
            print(f"== reuse d={d} height={height}", flush=True)
            rows += warm_versus_cold(height, d, m, n, quick)
    header = [
        "d",
        "height",
        "change",
        "warm-start TV",
        "cold steps",
        "warm steps",
        "steps warm/cold",
        "cold (s)",
        "warm (s)",
        "time warm/cold",
    ]
    met = [r for r in rows if r[2] in ("10% new points", "drift, by id") and r[6] <= 0.25]
    total = sum(1 for r in rows if r[2] in ("10% new points", "drift, by id"))

    n_total, chunk, m_s, n_test = (
        (20_000, 2000, 30, 5000) if quick else (1_000_000, 10_000, 1000, 200_000)
    )
    stream = run_case(
        "benchmarks.reuse:streaming_case",
        {"n_total": n_total, "chunk": chunk, "d": 2, "m": m_s, "n_test": n_test},
        timeout=1800,
        isolated=not quick,
    )
    n_full = n_total // 10
    full = run_case(
        "benchmarks.reuse:full_fit_case",
        {"n": n_full, "d": 2, "m": m_s, "n_test": n_test},
        timeout=1800,
        isolated=not quick,
    )

    def stream_row(label: str, res: dict) -> list:
        keys = (("steps", "n/a"), ("seconds", np.nan), ("tv", np.nan), ("peak_mb", np.nan))
        return [label, *(res.get(k, default) for k, default in keys), res.get("status", "")]

    stream_rows = [
        stream_row(f"partial_fit, {n_total:,} samples in batches of {chunk:,} (one pass)", stream),
        stream_row(f"fit on {n_full:,} samples", full),
    ]
    text = (
        f"Source: {n:,} samples of N(0, I); target: {m:,} points uniform in [-2, 2]^d; "
        "tol=1e-2, max_iter=3000, random_state=0, other parameters at their defaults (so "
        "vector heights take Newton steps from the start, residual heights Adam steps then "
        "Newton steps, network heights Adam steps). Warm: the estimator fitted on the original "
        "target, refitted with `warm_start=True` on the changed one (points matched by "
        "`target_ids` where the row says so, else by coordinates; unmatched points start from "
        "their nearest old points' residuals). Cold: a fresh estimator on the changed target. "
        "Warm-start TV is the marginal error at the warm fit's first evaluation. Changes: 10% "
        "of the points replaced by new uniform points; every point moved by 0.05 N(0, I); "
        "weights drawn uniform in [0.5, 1.5] and normalised; a new uniform draw.\n\n"
        f"**Target: warm start within 25% of the cold start's steps on the 10%-new-points and "
        f"drift cases.** Met in {len(met)} of {total} rows.\n\n"
        + md_table(header, rows)
        + f"\n**Streaming** (d = 2, m = {m_s:,} targets, network heights, batch_size=4096): "
        "source batches drawn from a generator, "
        "never held together. TV is the marginal error on "
        f"{n_test:,} fresh samples. Peak memory: fresh process, above its baseline after "
        "imports. **Target: under 1 GB.**\n\n"
        + md_table(["run", "steps", "seconds", "fresh-sample TV", "peak MB", "status"], stream_rows)
    )
    head = section_header(
        "Reuse: warm starts and streaming", quick, time.perf_counter() - start, load
    )
    return head + text


def main(argv: list[str] | None = None) -> int:
    from ._util import set_threads
    from .report import DEFAULT_RESULTS, write_benchmarks_md

    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    set_threads(1)
    section = run(quick)
    print(section)
    if not quick:
        (DEFAULT_RESULTS / "reuse.md").write_text(section)
        write_benchmarks_md()
    return 0


if __name__ == "__main__":
    sys.exit(main())
