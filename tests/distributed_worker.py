"""One rank of the data-parallel tests (``tests/test_distributed.py``), run under torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        tests/distributed_worker.py SCENARIO OUT_DIR

Each rank writes what it found to ``OUT_DIR/<scenario>-<rank>.pkl``; the tests compare.
"""

from __future__ import annotations

import datetime
import os
import pickle
import sys
import traceback

import numpy as np


def _data(n=6000, m=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(m, d)) * 1.5 + 0.3
    nu = rng.uniform(0.5, 1.5, size=m)
    fresh = rng.normal(size=(20000, d))
    return X, Y, nu, fresh


def _shards(n, rank, share=0.7):
    """Rank 0 the first ``share`` of the rows, rank 1 the rest (uneven shards)."""
    cut = int(share * n)
    return slice(0, cut) if rank == 0 else slice(cut, n)


CASES = {
    "vector_newton": {"height": "vector", "solver": "newton"},
    "residual_auto": {"height": "residual", "hidden_layer_sizes": (32,)},
    "network_adam_full": {
        "height": "network",
        "hidden_layer_sizes": (32,),
        "batch_size": 10**6,
        "max_iter": 300,
    },
    "vector_adam_batches": {"height": "vector", "solver": "adam", "batch_size": 512},
}


def _summary(ot, fresh):
    return {
        "heights": ot.heights_.copy(),
        "n_iter": ot.n_iter_,
        "error": ot.marginal_error_,
        "converged": ot.converged_,
        "index": ot.predict_index(fresh),
        "barycenters": ot.barycenters_.copy(),
        "center": ot.center_.copy(),
        "scale": ot.scale_,
    }


def scenario_equal(rank, share=0.7, weighted=False):
    import warnings

    import torch
    from sklearn.exceptions import ConvergenceWarning

    from skot import OTNetTransport

    X, Y, nu, fresh = _data()
    w = np.random.default_rng(5).uniform(0.2, 2.0, size=X.shape[0]) if weighted else None
    rows = _shards(X.shape[0], rank, share)
    out = {}
    for name, params in CASES.items():
        common = dict(params, random_state=0, device="cpu", tol=5e-3)
        if "max_iter" not in common:
            common["max_iter"] = 500
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            dist = OTNetTransport(distributed=True, **common).fit(
                X[rows],
                X_target=Y,
                target_weight=nu,
                sample_weight=None if w is None else w[rows],
            )
            result = {"dist": _summary(dist, fresh)}
            if rank == 0:
                single = OTNetTransport(**common).fit(
                    X, X_target=Y, target_weight=nu, sample_weight=w
                )
                result["single"] = _summary(single, fresh)
                clone = pickle.loads(pickle.dumps(dist))
                result["pickled_index"] = clone.predict_index(fresh)
                result["transform_local"] = np.array_equal(
                    dist.transform(X[rows]), Y[dist.predict_index(X[rows])]
                )
        out[name] = result
    torch.distributed.barrier()
    if share == 0.7 and not weighted:
        out["warm"] = scenario_warm(rank)
    return out


def scenario_targets(rank):
    """Target sharding: every rank the same rows, 41 targets split 21 / 20."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from skot import OTNetTransport

    X, Y, nu, fresh = _data(m=41)
    out = {}
    for name, params in CASES.items():
        common = dict(params, random_state=0, device="cpu", tol=5e-3)
        common.setdefault("max_iter", 500)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            dist = OTNetTransport(distributed="targets", **common)
            dist.fit(X, X_target=Y, target_weight=nu)
            out[name] = {"dist": _summary(dist, fresh)}
            if rank == 0:
                single = OTNetTransport(**common).fit(X, X_target=Y, target_weight=nu)
                out[name]["single"] = _summary(single, fresh)
    out["other_rows"] = _outcome(
        lambda: OTNetTransport(distributed="targets").fit(X + rank, X_target=Y)
    )
    return out


def _fit_both(rank, X, Y, nu, fresh, names):
    """Each of the ``CASES`` named: a fit on this rank's rows of ``X`` (uneven shards), and
    on rank 0 a fit on all of them."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from skot import OTNetTransport

    rows = _shards(X.shape[0], rank)
    out = {}
    for name in names:
        common = dict(CASES[name], random_state=0, device="cpu", tol=5e-3, max_iter=500)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            dist = OTNetTransport(distributed=True, **common)
            out[name] = {"dist": _summary(dist.fit(X[rows], X_target=Y, target_weight=nu), fresh)}
            if rank == 0:
                single = OTNetTransport(**common).fit(X, X_target=Y, target_weight=nu)
                out[name]["single"] = _summary(single, fresh)
    return out


def scenario_coarse_targets(rank):
    """Few rows per target: cold Newton fits start on coarse target levels (from 80 points
    on here; the default needs more than 2,000)."""
    from skot import _multiscale

    _multiscale.MIN_COARSE_TARGETS = 20
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 2))
    Y = rng.uniform(-2, 2, size=(400, 2))
    nu = np.ones(400)  # 5 rows each: an error of 0 is reachable
    fresh = rng.normal(size=(20000, 2))
    return _fit_both(rank, X, Y, nu, fresh, ("vector_newton", "residual_auto"))


def scenario_empty_weighted(rank):
    """Rank 1 holds no rows; then uneven shards with sample weights."""
    return {
        "empty": scenario_equal(rank, share=1.0),
        "weighted": scenario_equal(rank, weighted=True),
    }


def scenario_warm(rank):
    """A warm start onto a changed target: every rank the same, close to one process's (at
    a tolerance where maps within it are close: the one-process warm start has corrections
    that a data-parallel one has not, and at tol=1e-2 it stops at them, 98% the same map)."""
    from skot import OTNetTransport

    X, Y, nu, fresh = _data()
    rows = _shards(X.shape[0], rank)
    Y2 = Y.copy()
    Y2[:4] += 0.2
    params = dict(
        height="residual", hidden_layer_sizes=(32,), random_state=0, device="cpu", tol=1e-3
    )
    dist = OTNetTransport(distributed=True, warm_start=True, **params)
    dist.fit(X[rows], X_target=Y, target_weight=nu).fit(X[rows], X_target=Y2, target_weight=nu)
    out = {"dist": _summary(dist, fresh)}
    if rank == 0:
        single = OTNetTransport(warm_start=True, **params)
        single.fit(X, X_target=Y, target_weight=nu).fit(X, X_target=Y2, target_weight=nu)
        out["single"] = _summary(single, fresh)
    return out


def _outcome(fn):
    try:
        fn()
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": None}


def scenario_errors(rank):
    """Bad inputs on one rank, then on both: every rank raises, none waits; the group is still
    usable afterwards (a fit follows)."""
    from skot import OTNetTransport

    X, Y, nu, _ = _data(n=400)
    X = X[_shards(X.shape[0], rank)].copy()
    out = {}
    bad = X.copy()
    if rank == 1:
        bad[3, 1] = np.nan
    out["nan_on_rank_1"] = _outcome(lambda: OTNetTransport(distributed=True).fit(bad, X_target=Y))
    out["other_target"] = _outcome(
        lambda: OTNetTransport(distributed=True).fit(X, X_target=Y + rank)
    )
    out["other_features"] = _outcome(
        lambda: OTNetTransport(distributed=True).fit(X[:, : 3 - rank], X_target=Y[:, : 3 - rank])
    )
    out["no_target"] = _outcome(lambda: OTNetTransport(distributed=True).fit(X))
    out["partial_fit"] = _outcome(
        lambda: OTNetTransport(distributed=True).partial_fit(X, X_target=Y)
    )
    out["then_fit"] = _outcome(
        lambda: OTNetTransport(height="vector", distributed=True).fit(X, X_target=Y)
    )
    return out


def scenario_rank_stops(rank):
    """Rank 1 stays alive but never calls fit: rank 0 gets a DistributedError after the
    process group's timeout, not a hang."""
    import time

    from skot import OTNetTransport

    X, Y, nu, _ = _data(n=400)
    if rank == 1:
        time.sleep(float(os.environ.get("SKOT_TEST_TIMEOUT", "60")) + 5)
        return {"error": None}
    X = X[_shards(X.shape[0], rank)]
    start = time.perf_counter()
    out = _outcome(lambda: OTNetTransport(distributed=True).fit(X, X_target=Y))
    out["seconds"] = time.perf_counter() - start
    return out


def main():
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    scenario, out_dir = sys.argv[1], sys.argv[2]
    timeout = datetime.timedelta(seconds=float(os.environ.get("SKOT_TEST_TIMEOUT", "60")))
    dist.init_process_group("gloo", timeout=timeout)
    rank = dist.get_rank()
    try:
        result = globals()[f"scenario_{scenario}"](rank)
    except Exception:
        result = {"crash": traceback.format_exc()}
    with open(os.path.join(out_dir, f"{scenario}-{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)
    if scenario != "rank_stops":
        dist.destroy_process_group()
    os._exit(0)  # no teardown wait on a peer that already left


if __name__ == "__main__":
    main()
