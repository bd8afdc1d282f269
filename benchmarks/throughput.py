"""Transform throughput against the machine's own matrix-multiply speed, and out-of-sample
mapping of new points against POT's domain-adaptation classes."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from skot._kernels import _block_shape, default_block_elements

from ._util import load_note, md_table, section_header
from .methods import fit_method

__all__ = ["mm_gflops", "run"]


def mm_gflops(rows: int, inner: int, cols: int, repeat: int = 3) -> float:
    """Best-of-``repeat`` GFLOP/s of ``torch.mm`` on float32 ``(rows x inner) @ (inner x cols)``
    (small products are timed in loops of enough calls for about 0.2 GFLOP), written into
    one preallocated output, as skot's kernels do: a fresh output per call would add the
    operating system's page faults to the product's time."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(rows, inner, generator=g)
    B = torch.randn(inner, cols, generator=g)
    C = torch.empty(rows, cols)
    flop = 2.0 * rows * inner * cols
    calls = max(1, int(2e8 // flop))
    torch.mm(A, B, out=C)  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(calls):
            torch.mm(A, B, out=C)
        best = min(best, (time.perf_counter() - t) / calls)
    return flop / best / 1e9


def _timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def run(quick: bool, fig_dir: Path) -> str:
    """Measure transform throughput and out-of-sample mapping; return the Markdown section."""
    from skot import OTNetTransport

    start, load = time.perf_counter(), load_note()
    n, m, d = (20_000, 200, 16) if quick else (1_000_000, 10_000, 64)
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(m, d))
    X_fit = rng.normal(size=(min(n, 20_000), d))
    est = OTNetTransport(height="vector", max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X_fit, X_target=Y)
    X64 = rng.normal(size=(n, d))
    X32 = X64.astype(np.float32)
    flops = 2.0 * n * m * d
    block_rows = min(n, 16384)
    gf_block = mm_gflops(block_rows, d, m)
    # The kernels' own block of scores (sized to stay in cache): the product is fastest there.
    k_rows, k_cols = _block_shape(n, m, default_block_elements(torch.device("cpu")))
    gf_kernel = mm_gflops(k_rows, d, k_cols, repeat=5)
    gf_square = mm_gflops(2048, 2048, 2048) if not quick else mm_gflops(256, 256, 256)
    gf_roof = max(gf_block, gf_kernel)
    roof = flops / gf_roof / 1e9
    rows = []
    for label, fn, arg in [
        ("transform, float64 input", est.transform, X64),
        ("transform, float32 input", est.transform, X32),
        ("predict_index, float32 input", est.predict_index, X32),
    ]:
        fn(arg[:1000])
        sec, _ = _timed(fn, arg)
        rows.append([label, sec, n / sec, flops / sec / 1e9, roof / sec])
    rows.append(["torch.mm alone (roofline)", roof, n / roof, gf_roof, 1.0])
    best = max(r[4] for r in rows[:-1])
    intro = (
        f"Map n = {n:,} points onto m = {m:,} targets in d = {d} (float32 compute). The "
        f"roofline is the time of the same number of floating-point operations (2 n m d = "
        f"{flops / 1e9:.0f} GFLOP) at the best speed `torch.mm` reaches in this run with inner "
        f"dimension {d}: on skot's own block of scores, ({k_rows} x {d}) @ ({d} x {k_cols}), "
        f"{gf_kernel:.1f} GFLOP/s, and on a large block, ({block_rows} x {d}) @ ({d} x {m}), "
        f"{gf_block:.1f} GFLOP/s (a large square product, 2048^3 or 256^3 in quick mode, "
        f"reaches {gf_square:.1f} GFLOP/s, but with an inner dimension that reuses each "
        f"number {2048 if not quick else 256} times, not {d}). Torch threads: "
        f"{torch.get_num_threads()}. Transform time does not depend "
        "on how well the heights were trained, so the map here is fitted for one step.\n\n"
    )
    table = md_table(
        ["operation", "seconds", "points / s", "GFLOP/s", "fraction of roofline"], rows
    )
    verdict = (
        f"\n**Target: transform at >= 50% of the matrix-multiply roofline: best {best:.0%}, "
        f"{'met' if best >= 0.5 else 'missed'}.**\n\n"
    )
    # Out-of-sample mapping after a fit on n = m points.
    k = 300 if quick else 3000
    Xs = rng.normal(size=(k, 2))
    Xt = 0.5 * rng.normal(size=(k, 2)) + np.array([2.0, 0.0])
    Xnew = rng.normal(size=(k, 2))
    oos = []
    skot_steps = 50 if quick else 300
    for method, params in [
        ("skot-vector", {"max_iter": skot_steps}),
        ("pot-emd", None),
        ("pot-sinkhorn", None),
    ]:
        fitted = fit_method(method, Xs, Xt, skot_params=params)
        sec, _ = _timed(fitted.transform, Xnew)
        oos.append([method, fitted.fit_seconds, sec, k / sec])
        print("  ", oos[-1], flush=True)
    oos_text = (
        f"### Out-of-sample transform\n\nFit on n = m = {k:,} points (d = 2), then map "
        f"{k:,} new points. skot: vector heights, at most "
        f"{skot_steps} steps; POT: `ot.da.EMDTransport` (nearest "
        "training point plus its barycentric displacement, batches of 128) and "
        "`ot.da.SinkhornTransport` (reg_e = 0.01 x mean squared distance, continuous map).\n\n"
        + md_table(["method", "fit (s)", "transform (s)", "points / s"], oos)
    )
    head = section_header("Transform throughput", quick, time.perf_counter() - start, load)
    return head + intro + table + verdict + oos_text
