"""Strong scaling of a data-parallel fit on this machine's CPU: one process against two
(``distributed=True``, gloo, launched by ``torch.distributed.run``), one torch thread each, on
the same problem: free heights by Newton steps, source ``N(0, I)``, target a shifted, shrunk
Gaussian mixture (:func:`benchmarks.scale.make_data`'s law). Each rank builds its own rows
(blocks of a seeded stream, so the union is the same whatever the number of ranks) and the
target; the fit's wall time, Newton steps, marginal error and the time and bytes of its
collectives are recorded on every rank.

``SKOT_DISTRIBUTED_N``, ``_M``, ``_D`` and ``_STEPS`` set the problem (default: the issue's
n = 2 x 10^6, m = 10^4, d = 64, at most 3 Newton steps; 0 steps means to ``tol``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ._util import REPO, load_note, md_table, rss_mb, section_header

__all__ = ["rows", "run", "target"]

_BLOCK = 2**16


def rows(n: int, d: int, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of the seeded source stream (float32, built block by block)."""
    out = np.empty((hi - lo, d), dtype=np.float32)
    for b in range(lo // _BLOCK, -(-hi // _BLOCK)):
        start, stop = b * _BLOCK, min((b + 1) * _BLOCK, n)
        block = np.random.default_rng([7, b]).standard_normal((stop - start, d), np.float32)
        a, z = max(start, lo), min(stop, hi)
        out[a - lo : z - lo] = block[a - start : z - start]
    return out


def target(m: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, d)) * (2.0 / math.sqrt(d))
    return centres[rng.integers(4, size=m)] + 0.5 * rng.normal(size=(m, d))


def _worker(n: int, m: int, d: int, steps: int, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    distributed = "WORLD_SIZE" in os.environ
    rank, size = 0, 1
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank, size = dist.get_rank(), dist.get_world_size()
    from skot import OTNetTransport
    from skot._distributed import Group

    lo, hi = n * rank // size, n * (rank + 1) // size
    X, Y = rows(n, d, lo, hi), target(m, d)
    base = rss_mb()
    ot = OTNetTransport(
        height="vector",
        solver="newton",
        max_iter=steps or 100,
        device="cpu",
        random_state=0,
        distributed=distributed,
    )
    start = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ot.fit(X, X_target=Y)
    seconds = time.perf_counter() - start
    result = {
        "rank": rank,
        "size": size,
        "rows": hi - lo,
        "seconds": seconds,
        "n_iter": ot.n_iter_,
        "error": ot.marginal_error_,
        "comm_seconds": Group.stats["seconds"],
        "comm_bytes": Group.stats["bytes"],
        "comm_calls": Group.stats["calls"],
        "peak_mb": rss_mb() - base,
        "heights": ot.heights_.tolist(),
        "first_pass_scores": n * m,
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    if distributed:
        dist.destroy_process_group()


def _launch(nproc: int, n: int, m: int, d: int, steps: int) -> list[dict]:
    # The ranks' records stay on disk (minutes of fitting each), in a folder named in the log.
    out = tempfile.mkdtemp(prefix=f"skot_distributed_{nproc}_")
    print(f"distributed benchmark: {nproc} process(es), records in {out}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = ["-m", "benchmarks.distributed", "--worker", str(n), str(m), str(d), str(steps)]
    if nproc == 1:
        cmd = [sys.executable, *args, out]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            *args[1:],
            out,
        ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(nproc)]


def run(quick: bool = True, fig_dir: Path | None = None) -> str:
    os.environ["SKOT_BENCH_THREADS"] = "1"  # what each process uses (the header says so)
    start = time.perf_counter()
    load = load_note()
    env = os.environ.get
    n = int(env("SKOT_DISTRIBUTED_N", 20_000 if quick else 2_000_000))
    m = int(env("SKOT_DISTRIBUTED_M", 200 if quick else 10_000))
    d = int(env("SKOT_DISTRIBUTED_D", 8 if quick else 64))
    steps = int(env("SKOT_DISTRIBUTED_STEPS", 3))
    one = _launch(1, n, m, d, steps)
    two = _launch(2, n, m, d, steps)
    table = []
    for label, ranks in (("1 process x 1 thread", one), ("2 processes x 1 thread", two)):
        slowest = max(r["seconds"] for r in ranks)
        table.append(
            [
                label,
                " / ".join(f"{r['rows']:,}" for r in ranks),
                ranks[0]["n_iter"],
                f"{ranks[0]['error']:.4g}",
                f"{slowest:.1f}",
                " / ".join(f"{r['comm_seconds']:.2f}" for r in ranks),
                f"{ranks[0]['comm_bytes'] / 2**20:.1f}",
                ranks[0]["comm_calls"],
                " / ".join(f"{r['peak_mb']:.0f}" for r in ranks),
            ]
        )
    speedup = max(r["seconds"] for r in one) / max(r["seconds"] for r in two)
    h1, h2 = np.asarray(one[0]["heights"]), np.asarray(two[0]["heights"])
    spread = float(np.ptp(h1)) or 1.0
    moved = float(np.abs(h1 - h2).max()) / spread
    what = f"{steps} Newton steps" if steps else "the fit to tol = 0.01"
    text = section_header(
        "Data-parallel fits: strong scaling", quick, time.perf_counter() - start, load
    )
    text += (
        f"n = {n:,} source rows, m = {m:,} targets, d = {d}, vector heights, "
        f"{what}, float32 scores; each process one torch thread, on this machine's "
        "cores (gloo over loopback). Seconds: the slowest rank's `fit`; communication: "
        "time inside collectives per rank (including waiting for the other rank) and the "
        "tensor bytes each rank sent (all-reduces of cell masses, Hessian products, "
        "energies). Peak memory: resident set growth during the fit.\n\n"
    )
    text += md_table(
        [
            "run",
            "rows per rank",
            "steps",
            "marginal error",
            "fit (s)",
            "in collectives (s)",
            "sent (MiB)",
            "collectives",
            "peak MB per rank",
        ],
        table,
    )
    text += (
        f"\n**Speed-up: {speedup:.2f}x** (target 1.6x). Largest difference between the two "
        f"runs' heights: {moved:.1e} of their spread (float32 scores of data standardised "
        "by sums taken in another order).\n"
    )
    return text


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        _worker(*map(int, sys.argv[2:6]), sys.argv[6])
