"""
One transport map fitted across processes and GPUs
==================================================

A data-parallel (or target-sharded) fit with ``torch.distributed``. Launch it with torchrun,
one process per GPU (or per CPU core group)::

    torchrun --standalone --nproc_per_node=2 examples/distributed_fit.py
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:29500 examples/distributed_fit.py --samples 100000000

Every rank builds (in practice: loads) its own rows of the source and the same target, and
calls ``fit`` with ``distributed=True``; every rank ends with the same estimator, and rank 0
saves it. ``--layout targets`` splits the targets' columns between the ranks instead (every
rank the same rows). The gallery shows it without running it: it needs a launcher.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time

import numpy as np
import torch
import torch.distributed as dist

from skot import OTNetTransport


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000, help="source rows over all ranks")
    parser.add_argument("--targets", type=int, default=1_000, help="target points")
    parser.add_argument("--features", type=int, default=16, help="dimension")
    parser.add_argument("--layout", choices=["data", "targets"], default="data")
    parser.add_argument("--device", default="auto", help='"auto", "cpu" or "cuda"')
    parser.add_argument("--out", default="transport.pkl", help="where rank 0 saves the map")
    args = parser.parse_args()

    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    if use_cuda:  # one GPU per process: torchrun sets LOCAL_RANK
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, size = dist.get_rank(), dist.get_world_size()

    # This rank's rows (here drawn; in practice read from this rank's files) and the target.
    if args.layout == "data":
        lo, hi = args.samples * rank // size, args.samples * (rank + 1) // size
    else:
        lo, hi = 0, args.samples
    X = np.random.default_rng([0, lo]).normal(size=(hi - lo, args.features)).astype(np.float32)
    Y = np.random.default_rng(1).uniform(-2, 2, size=(args.targets, args.features))

    ot = OTNetTransport(
        device=args.device, distributed=args.layout, random_state=0, verbose=rank == 0
    )
    start = time.perf_counter()
    ot.fit(X, X_target=Y)
    seconds = time.perf_counter() - start
    if rank == 0:
        print(
            f"{size} ranks, {args.layout} parallel: n={args.samples:,} m={args.targets:,} "
            f"d={args.features}: "
            f"{ot.n_iter_} steps, marginal error {ot.marginal_error_:.4f}, {seconds:.1f} s"
        )
        with open(args.out, "wb") as f:
            pickle.dump(ot, f)  # an ordinary estimator: transform works in any process
    index = ot.predict_index(X[:1000])  # every rank maps its own rows
    print(f"rank {rank}: {len(index)} rows mapped onto {len(np.unique(index))} targets")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
