"""GPU benchmark: a large fit and transform on one CUDA device.

``python -m benchmarks.gpu --device cuda`` fits n = 10^7 source samples onto m = 10^5 targets
in d = 64 (about five minutes on one H100), measures transform throughput against the
device's own ``torch.mm`` speed, prints a table, and with ``--write`` stores it as the
``gpu`` section of ``docs/benchmarks.md``. ``--device cpu --tiny`` runs the same code at a
tiny size (used by the test suite).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ._util import load_note, md_table, section_header
from .report import DEFAULT_RESULTS, write_benchmarks_md

__all__ = ["main", "run_gpu"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _mm_gflops(rows: int, inner: int, cols: int, device: str) -> float:
    A = torch.randn(rows, inner, device=device)
    B = torch.randn(inner, cols, device=device)
    torch.mm(A, B)
    _sync(device)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(A, B)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * rows * inner * cols / best / 1e9


def run_gpu(device: str, tiny: bool) -> tuple[str, list[list]]:
    """Fit, transform and roofline on ``device``; return (Markdown section, table rows)."""
    from skot import OTNetTransport

    start, load = time.perf_counter(), load_note()
    if tiny:
        n, m, d, k = 2000, 100, 8, 2000
        params = {"max_iter": 20, "batch_size": 256, "hidden_layer_sizes": (16, 16)}
    else:
        n, m, d, k = 10_000_000, 100_000, 64, 2_000_000
        params = {"max_iter": 2000, "batch_size": 65_536, "hidden_layer_sizes": (256, 256)}
    rng = np.random.default_rng(0)
    X = rng.standard_normal(size=(n, d), dtype=np.float32)
    centres = rng.standard_normal(size=(8, d), dtype=np.float32) * 0.5
    Y = centres[rng.integers(8, size=m)] + 0.5 * rng.standard_normal(size=(m, d), dtype=np.float32)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    est = OTNetTransport(height="network", device=device, random_state=0, **params)
    _sync(device)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, X_target=Y)
    _sync(device)
    fit_s = time.perf_counter() - t
    del X
    Xn = rng.standard_normal(size=(k, d), dtype=np.float32)
    est.predict_index(Xn[:1000])
    _sync(device)
    t = time.perf_counter()
    est.predict_index(Xn)
    _sync(device)
    tr_s = time.perf_counter() - t
    gflops = _mm_gflops(min(k, 16384), d, m, device)
    flops = 2.0 * k * m * d
    peak_gpu = (
        torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    )
    rows = [
        ["fit (s)", fit_s],
        ["steps", est.n_iter_],
        ["s / step", fit_s / max(est.n_iter_, 1)],
        ["marginal TV (tol 1e-2)", est.marginal_error_],
        ["converged", est.converged_],
        ["peak GPU memory (GiB)", peak_gpu],
        [f"predict_index of {k:,} points (s)", tr_s],
        ["points / s", k / tr_s],
        ["torch.mm GFLOP/s (same block shape)", gflops],
        ["fraction of roofline", flops / gflops / 1e9 / tr_s],
    ]
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU"
    text = (
        f"Device {device} ({name}). n = {n:,} source samples (N(0, I)), m = {m:,} targets "
        f"(8-mode mixture), d = {d}, float32. skot: height=network, "
        f"{', '.join(f'{a}={b}' for a, b in params.items())}, tol=1e-2.\n\n"
        + md_table(["quantity", "value"], rows)
    )
    head = section_header("GPU", tiny, time.perf_counter() - start, load)
    return head + text, rows


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.gpu [--device cuda] [--tiny] [--write]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument(
        "--write",
        type=Path,
        nargs="?",
        const=DEFAULT_RESULTS,
        default=None,
        help="write the section to DIR/gpu.md (default DIR: benchmarks/results) and, for the "
        "default DIR, reassemble docs/benchmarks.md",
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available", file=sys.stderr)
        return 2
    if args.tiny:
        torch.set_num_threads(1)  # tiny problems: threads only add scheduling overhead
    section, rows = run_gpu(args.device, args.tiny)
    print(md_table(["quantity", "value"], rows))
    if args.write is not None:
        args.write.mkdir(parents=True, exist_ok=True)
        (args.write / "gpu.md").write_text(section)
        if args.write.resolve() == DEFAULT_RESULTS.resolve():
            write_benchmarks_md()
    return 0


if __name__ == "__main__":
    sys.exit(main())
