"""GPU benchmark: large fits and transform throughput on one CUDA device.

``python -m benchmarks.gpu --device cuda`` runs, on one device:

* the CPU scale target on the GPU: n = 10^6 source samples onto m = 10^4 targets in d = 64,
  fitted to a marginal TV of 1% (exact: the whole sample is the evaluation set);
* a larger fit, n = 10^7 onto m = 10^5 in d = 64, free heights taking Newton steps over the
  whole sample (so the marginal TV is exact), under a wall-clock budget;
* ``predict_index`` throughput of 2 * 10^6 new points onto those 10^5 targets against the
  device's own ``torch.mm`` speed on the same block shape (the roofline).

It prints each table as soon as it is measured and with ``--write`` stores the whole section
as ``gpu`` in ``docs/benchmarks.md``. ``--device cpu --tiny`` runs the same code at a tiny
size (used by the test suite).
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


def _peak_gib(device: str) -> float:
    if not device.startswith("cuda"):
        return float("nan")
    return torch.cuda.max_memory_allocated() / 2**30


def _kernel_times(device: str, tiny: bool) -> tuple[list[list], bool]:
    """Seconds (best of 3) of one ``top_k`` (k = 8) and one ``assign`` pass with
    plain and with group-wise row reductions on ``device``; return the table rows and whether
    group-wise was faster in total (the rest of the run then uses it)."""
    from skot import _kernels

    n, m, d = (4000, 2000, 8) if tiny else (262_144, 100_000, 64)
    g = torch.Generator(device=device).manual_seed(0)
    X = torch.randn(n, d, device=device, generator=g)
    Y = torch.randn(m, d, device=device, generator=g)
    cells = _kernels.PowerCells(Y, torch.zeros(m, device=device))
    saved = set(_kernels.GROUPED_REDUCTIONS)
    kind = torch.device(device).type
    times = {}
    for variant, devices in (("plain", saved - {kind}), ("group-wise", saved | {kind})):
        _kernels.GROUPED_REDUCTIONS = devices
        for name, fn in (
            ("top_k", lambda: cells.top_k(X, 8)),
            ("assign", lambda: cells.assign(X)),
        ):
            fn()  # warm-up
            best = float("inf")
            for _ in range(3):  # one pass alone proved misleading (13% off on an H200)
                _sync(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                best = min(best, time.perf_counter() - t)
            times[variant, name] = best
    grouped = sum(v for (k, _), v in times.items() if k == "group-wise") < sum(
        v for (k, _), v in times.items() if k == "plain"
    )
    _kernels.GROUPED_REDUCTIONS = saved | {kind} if grouped else saved - {kind}
    rows = [
        [f"{name} of {n:,} x {m:,} scores (s)", times["plain", name], times["group-wise", name]]
        for name in ("top_k", "assign")
    ]
    return rows, grouped


def _problem(rng, n: int, m: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.standard_normal(size=(n, d), dtype=np.float32)
    centres = rng.standard_normal(size=(8, d), dtype=np.float32) * 0.5
    Y = centres[rng.integers(8, size=m)] + 0.5 * rng.standard_normal(size=(m, d), dtype=np.float32)
    return X, Y


def _fit(est, X, Y, device: str, budget_s: float, chunk: int) -> float:
    """Fit in warm-started rounds of ``chunk`` steps until converged or out of steps or time."""
    _sync(device)
    t = time.perf_counter()
    total = est.max_iter
    est.set_params(max_iter=chunk, warm_start=True)
    done = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while True:
            est.fit(X, X_target=Y)
            done += chunk
            elapsed = time.perf_counter() - t
            print(
                f"  {est.n_iter_} steps, TV {est.marginal_error_:.4f}, {elapsed:.0f} s", flush=True
            )
            if est.converged_ or done >= total or elapsed > budget_s:
                break
    _sync(device)
    return time.perf_counter() - t


def _fit_once(est, X, Y, device: str, budget_s: float) -> float:
    """One fit (so Newton's candidate passes carry over every step), stopped by a time budget;
    prints each evaluation."""
    from skot.callbacks import TimeBudget

    def show(estimator, record) -> bool:
        print(f"  step {record.step}, TV {record.error:.4f}, {record.seconds:.0f} s", flush=True)
        return False

    est.set_params(callbacks=[TimeBudget(budget_s), show])
    _sync(device)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, X_target=Y)
    _sync(device)
    return time.perf_counter() - t


def run_gpu(device: str, tiny: bool, large_fit: bool = True) -> tuple[str, list[list]]:
    """Fit, transform and roofline on ``device``; return (Markdown section, table rows).

    The choice of row reductions made for the run is undone at the end (the process may go on,
    as in the test suite)."""
    from skot import _kernels

    saved = _kernels.GROUPED_REDUCTIONS  # the run rebinds it, never mutates it
    try:
        return _run_gpu(device, tiny, large_fit)
    finally:
        _kernels.GROUPED_REDUCTIONS = saved


def _run_gpu(device: str, tiny: bool, large_fit: bool) -> tuple[str, list[list]]:
    from skot import OTNetTransport

    start, load = time.perf_counter(), load_note()
    rng = np.random.default_rng(0)
    if tiny:
        small, large, k = (2000, 100, 8), (4000, 200, 8), 2000
        params = {"batch_size": 256, "hidden_layer_sizes": (16, 16)}
        max_small, max_large, budgets, chunks = 20, 20, (5.0, 5.0), (10, 10)
    else:
        small, large, k = (1_000_000, 10_000, 64), (10_000_000, 100_000, 64), 2_000_000
        params = {"batch_size": 65_536, "hidden_layer_sizes": (256, 256)}
        max_small, max_large, budgets, chunks = 2000, 100, (150.0, 120.0), (250, 100)
    sections = []
    rows_all = []

    # 0. Row reductions: plain or group-wise on this device (the rest of the run uses the faster).
    rows, grouped = _kernel_times(device, tiny)
    print(md_table(["kernel pass", "plain", "group-wise"], rows), flush=True)
    sections.append(
        "**Row reductions.** One pass of each kernel (best of 3) over random scores (d = "
        f"{8 if tiny else 64}, float32) with plain torch reductions and with the group-wise "
        "ones (group maxima by `amax`, then only the best groups searched; the CPU default). "
        f"The rest of this run uses the **{'group-wise' if grouped else 'plain'}** ones.\n\n"
        + md_table(["kernel pass", "plain", "group-wise"], rows)
    )
    rows_all += rows

    # 1. The CPU scale target (issue 5), on the device, for OT-Net and for free heights.
    n, m, d = small
    X, Y = _problem(rng, n, m, d)
    heights = ("network", "vector")
    columns = []
    for height in heights:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        est = OTNetTransport(
            height=height, device=device, random_state=0, max_iter=max_small, **params
        )
        print(f"== fit n={n:,} m={m:,} d={d} height={height} (budget {budgets[0]:.0f} s)")
        fit_s = _fit(est, X, Y, device, budgets[0], chunks[0])
        columns.append(
            [
                fit_s,
                est.n_iter_,
                fit_s / max(est.n_iter_, 1),
                est.marginal_error_,
                est.converged_,
                _peak_gib(device),
            ]
        )
        del est
    names = [
        "fit (s)",
        "steps",
        "s / step",
        "marginal TV, exact (tol 1e-2)",
        "converged",
        "peak GPU memory (GiB)",
    ]
    rows = [[name, *(col[i] for col in columns)] for i, name in enumerate(names)]
    print(md_table(["quantity", *heights], rows), flush=True)
    sections.append(
        f"**Fit to tolerance.** n = {n:,} source samples (N(0, I)), m = {m:,} targets "
        f"(8-mode mixture), d = {d}, float32, max_iter={max_small}, "
        f"{', '.join(f'{a}={b}' for a, b in params.items())}, tol=1e-2, solver=auto (network "
        "heights: Adam steps; vector heights: Newton steps), fitted in warm-started rounds of "
        f"{chunks[0]} steps under a {budgets[0]:.0f} s budget. The TV is exact (the whole "
        "sample is the evaluation set).\n\n" + md_table(["quantity", *heights], rows)
    )
    rows_all += rows
    del X

    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU"
    if not large_fit:
        head = section_header("GPU", tiny, time.perf_counter() - start, load)
        return head + f"Device {device} ({name}).\n\n" + "\n".join(sections), rows_all

    # 2. A larger fit under a wall-clock budget (free heights: Newton steps over the whole sample,
    # so the TV is exact), then transform throughput.
    n, m, d = large
    X, Y = _problem(rng, n, m, d)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    est = OTNetTransport(
        height="vector",
        device=device,
        random_state=0,
        max_iter=max_large,
        solver="newton",
        **params,
    )
    print(f"== fit n={n:,} m={m:,} d={d} height=vector (budget {budgets[1]:.0f} s)", flush=True)
    fit_s = _fit_once(est, X, Y, device, budgets[1])
    del X
    peak_fit = _peak_gib(device)
    Xn = rng.standard_normal(size=(k, d), dtype=np.float32)
    est.predict_index(Xn[:1000])
    _sync(device)
    t = time.perf_counter()
    est.predict_index(Xn)
    _sync(device)
    tr_s = time.perf_counter() - t
    gflops = _mm_gflops(min(k, 16384), d, m, device)
    flops = 2.0 * k * m * d
    met = "met" if est.marginal_error_ <= 0.01 and fit_s < 60 else "missed"
    rows = [
        ["fit (s)", fit_s],
        ["target: TV <= 1% in under 60 s (goal 20 s)", "n/a (tiny)" if tiny else met],
        ["steps", est.n_iter_],
        ["s / step", fit_s / max(est.n_iter_, 1)],
        ["marginal TV, exact (tol 1e-2)", est.marginal_error_],
        ["converged", est.converged_],
        ["peak GPU memory, fit (GiB)", peak_fit],
        [f"predict_index of {k:,} points (s)", tr_s],
        ["points / s", k / tr_s],
        ["torch.mm GFLOP/s (same block shape)", gflops],
        ["fraction of roofline", flops / gflops / 1e9 / tr_s],
    ]
    print(md_table(["quantity", "value"], rows), flush=True)
    sections.append(
        f"**Larger fit under a {budgets[1]:.0f} s budget, and transform.** n = {n:,}, m = {m:,}, "
        f'd = {d}, same distributions, vector heights with `solver="newton"` (Newton steps over '
        "the whole sample from the start, so the TV is exact), fitted in one call (so that "
        "each Newton pass after the first rescores the candidates of the earlier passes) "
        "stopped by `TimeBudget` when not converged; the fit time includes the final pass "
        "for the barycentres.\n\n" + md_table(["quantity", "value"], rows)
    )
    rows_all += rows
    head = section_header("GPU", tiny, time.perf_counter() - start, load)
    return head + f"Device {device} ({name}).\n\n" + "\n".join(sections), rows_all


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.gpu [--device cuda] [--tiny] [--write]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument(
        "--no-large", action="store_true", help="skip the larger fit and the transform"
    )
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
    section, _ = run_gpu(args.device, args.tiny, large_fit=not args.no_large)
    if args.write is not None:
        args.write.mkdir(parents=True, exist_ok=True)
        (args.write / "gpu.md").write_text(section)
        if args.write.resolve() == DEFAULT_RESULTS.resolve():
            write_benchmarks_md()
    return 0


if __name__ == "__main__":
    sys.exit(main())
