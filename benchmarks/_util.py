"""Shared helpers: machine description, isolated runs with peak memory, Markdown tables."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "REPO",
    "set_threads",
    "skot_revision",
    "cpu_model",
    "gpu_name",
    "load_note",
    "machine_summary",
    "md_table",
    "rss_mb",
    "run_case",
    "run_isolated",
    "section_header",
    "versions",
]

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def total_ram_gb() -> float:
    """Physical memory in GB (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError):
        return 0.0


def gpu_name() -> str:
    """Name of the first CUDA device, or ``"none"``."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    except Exception:  # noqa: BLE001 - a broken torch install must not stop the report
        pass
    return "none"


def machine_summary() -> str:
    """One line: CPU model, cores, RAM, GPU."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {total_ram_gb():.0f} GB RAM, GPU: {gpu_name()}"


def versions() -> dict[str, str]:
    """Versions of the libraries the benchmarks use (``"absent"`` when not installed)."""
    out = {"python": platform.python_version()}
    for name, module in [
        ("skot", "skot"),
        ("torch", "torch"),
        ("numpy", "numpy"),
        ("scikit-learn", "sklearn"),
        ("POT", "ot"),
    ]:
        try:
            out[name] = importlib.import_module(module).__version__
        except ImportError:
            out[name] = "absent"
    return out


def skot_revision() -> str:
    """The repository's commit, flagged when ``skot/`` has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "skot"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown revision"
    if not head:
        return "unknown revision"
    return f"skot at {head}" + (" with uncommitted changes in skot/" if dirty else "")


def load_note() -> str:
    """The load average against the core count, flagging a shared machine."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return "load average unknown"
    cores = os.cpu_count() or 1
    shared = load > 0.5 * cores
    note = f"1-minute load average {load:.1f} on {cores} cores"
    return note + (" (machine shared with other jobs: timings are noisy)" if shared else "")


def section_header(title: str, quick: bool, seconds: float | None = None, load: str = "") -> str:
    """Heading and run line of a benchmark section."""
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (tiny sizes, not meaningful)" if quick else "full"
    import torch

    line = (
        f"_Run {when}, mode {mode}, {skot_revision()}, {machine_summary()}, "
        f"{os.environ.get('SKOT_BENCH_THREADS') or torch.get_num_threads()} torch threads"
    )
    if load:
        line += f"; at start: {load}"
    if seconds is not None:
        line += f"; took {seconds:.0f} s"
    return f"## {title}\n\n{line}._\n\n"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; floats are written with 4 significant digits."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            if v != v:  # NaN
                return "n/a"
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def set_threads(n: int | None) -> None:
    """Use ``n`` threads in torch and the BLAS/OpenMP libraries here and in child processes."""
    if not n:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SKOT_BENCH_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def _status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    """Current resident set size of this process in MB (from ``/proc/self/status``)."""
    return _status_mb("VmRSS")


def run_case(func: str, kwargs: dict, timeout: float = 600.0, isolated: bool = True) -> dict:
    """:func:`run_isolated`, or with ``isolated=False`` a plain in-process call (no memory
    figure: ``peak_mb`` is NaN), which is much faster for tiny sizes."""
    if isolated:
        return run_isolated(func, kwargs, timeout)
    module, name = func.split(":")
    result = getattr(importlib.import_module(module), name)(**kwargs)
    result.update(status="ok", peak_mb=float("nan"))
    return result


def run_isolated(func: str, kwargs: dict, timeout: float = 600.0) -> dict:
    """Run ``module:function(**kwargs)`` in a fresh Python process and return its result.

    The child imports numpy, torch, POT (when present) and skot, warms them up, resets the
    kernel's peak-RSS mark (``/proc/self/clear_refs``), records its resident memory
    (``baseline_mb``), runs the function and reports ``peak_mb``, the peak resident set size
    from then on (``VmHWM``; ``ru_maxrss`` where the mark cannot be reset) minus that
    baseline: the memory the case itself needed, its data included. ``seconds`` is the wall
    time the function measured itself (or the whole call). On a timeout or a crash (out of
    memory included) the result is ``{"status": "timeout ..."}`` or ``{"status": "failed
    ..."}``.
    """
    cmd = [sys.executable, "-m", "benchmarks._worker", func, json.dumps(kwargs)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
        )
    except subprocess.TimeoutExpired:
        return {"status": f"timeout (> {timeout:.0f} s)"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        code = proc.returncode
        why = "killed, likely out of memory" if code in (-9, 137) else tail[0][:120]
        return {"status": f"failed ({why})"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.setdefault("seconds", time.perf_counter() - start)
    result.setdefault("status", "ok")
    return result


def _worker_main(argv: list[str]) -> None:
    """Entry point of the child process started by :func:`run_isolated`."""
    func, kwargs = argv[0], json.loads(argv[1])
    import numpy  # noqa: F401
    import torch  # noqa: F401

    try:
        import ot  # noqa: F401
    except ImportError:
        pass
    import skot  # noqa: F401

    threads = os.environ.get("SKOT_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    module, name = func.split(":")
    target = getattr(importlib.import_module(module), name)
    # Warm-up so that one-time lazy initialisation is not charged to the case: the first
    # torch.optim.Adam of a process imports torch._dynamo (2-4 s), the first products load
    # their kernels.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))
    numpy.ones((64, 64)) @ numpy.ones((64, 64))
    # Reset the kernel's peak-RSS mark (VmHWM) so that transient memory used while importing
    # is not counted; without /proc/self/clear_refs fall back to the lifetime peak.
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    baseline = rss_mb()
    result = target(**kwargs)
    peak = _status_mb("VmHWM") if reset else float("nan")
    if peak != peak:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    result["baseline_mb"] = baseline
    result["peak_mb"] = max(peak - baseline, 0.0)
    print(json.dumps(result))
