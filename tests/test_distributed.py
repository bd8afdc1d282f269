"""Data-parallel fits (``distributed=True``) with 2 gloo processes under torchrun.

Each scenario of ``tests/distributed_worker.py`` runs once per module (a few seconds each);
the tests compare what every rank found with one process fitting the union of the rows.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skot import OTNetTransport
from skot.exceptions import DistributedError

WORKER = Path(__file__).with_name("distributed_worker.py")
DETERMINISTIC = ("vector_newton", "residual_auto", "network_adam_full")

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _run(scenario: str, tmp_path: Path, timeout_s: float = 60) -> list[dict]:
    env = dict(os.environ, SKOT_TEST_TIMEOUT=str(timeout_s), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        scenario,
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    results = []
    for rank in (0, 1):
        path = tmp_path / f"{scenario}-{rank}.pkl"
        assert path.exists(), f"rank {rank} wrote nothing:\n{proc.stdout}\n{proc.stderr}"
        with open(path, "rb") as f:
            result = pickle.load(f)
        assert "crash" not in result, result.get("crash")
        results.append(result)
    return results


@pytest.fixture(scope="module")
def equal(tmp_path_factory):
    return _run("equal", tmp_path_factory.mktemp("equal"))


@pytest.fixture(scope="module")
def empty_weighted(tmp_path_factory):
    return _run("empty_weighted", tmp_path_factory.mktemp("empty_weighted"))


def _check_same_as_one_process(rank0: dict, rank1: dict, name: str) -> None:
    a, b, single = rank0[name]["dist"], rank1[name]["dist"], rank0[name]["single"]
    # Every rank ends with the same estimator, bit for bit.
    np.testing.assert_array_equal(a["heights"], b["heights"])
    np.testing.assert_array_equal(a["barycenters"], b["barycenters"])
    assert a["n_iter"] == b["n_iter"]
    # The same fit as one process on the union, up to float reduction order.
    assert (a["index"] == single["index"]).mean() >= 0.999
    assert abs(a["n_iter"] - single["n_iter"]) <= 1
    np.testing.assert_allclose(a["center"], single["center"], rtol=1e-12, atol=1e-12)
    assert a["scale"] == pytest.approx(single["scale"], rel=1e-12)
    np.testing.assert_allclose(a["barycenters"], single["barycenters"], atol=1e-3)
    assert a["converged"] and single["converged"]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_uneven_shards_equal_one_process(equal, name):
    _check_same_as_one_process(*equal, name)


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("case", ["empty", "weighted"])
def test_empty_rank_and_weights_equal_one_process(empty_weighted, case, name):
    rank0, rank1 = (r[case] for r in empty_weighted)
    _check_same_as_one_process(rank0, rank1, name)


@pytest.fixture(scope="module")
def coarse_targets(tmp_path_factory):
    return _run("coarse_targets", tmp_path_factory.mktemp("coarse_targets"))


@pytest.mark.parametrize("name", ["vector_newton", "residual_auto"])
def test_coarse_target_levels_equal_one_process(coarse_targets, name):
    # Few rows per target: the cold fits start on coarse target levels (skot._multiscale).
    # With 5 rows a target, a row that the reduction order moves to a neighbouring cell moves
    # its barycentre by a spacing: the barycentres are not compared with one process's.
    rank0, rank1 = coarse_targets
    a, b, single = rank0[name]["dist"], rank1[name]["dist"], rank0[name]["single"]
    np.testing.assert_array_equal(a["heights"], b["heights"])
    assert a["n_iter"] == b["n_iter"]
    assert (a["index"] == single["index"]).mean() >= 0.999
    assert abs(a["n_iter"] - single["n_iter"]) <= 1
    assert a["converged"] and single["converged"]


def test_monte_carlo_batches_agree_across_ranks(equal):
    # Each rank draws its own share of every batch: the draws differ from one process's,
    # but every rank takes the same steps and the map is as good.
    rank0, rank1 = equal
    a, b = rank0["vector_adam_batches"]["dist"], rank1["vector_adam_batches"]["dist"]
    single = rank0["vector_adam_batches"]["single"]
    np.testing.assert_array_equal(a["heights"], b["heights"])
    assert a["converged"] and a["error"] <= 5e-3
    assert (a["index"] == single["index"]).mean() >= 0.98


def test_pickled_from_rank_0_is_an_ordinary_estimator(equal):
    rank0, _ = equal
    for name in DETERMINISTIC:
        np.testing.assert_array_equal(rank0[name]["pickled_index"], rank0[name]["dist"]["index"])
        assert rank0[name]["transform_local"]


def test_warm_start_on_a_changed_target(equal):
    a, b = equal[0]["warm"]["dist"], equal[1]["warm"]["dist"]
    single = equal[0]["warm"]["single"]
    np.testing.assert_array_equal(a["heights"], b["heights"])
    assert a["converged"]
    assert (a["index"] == single["index"]).mean() >= 0.99


def test_bad_input_on_one_rank_is_an_error_on_every_rank(tmp_path):
    rank0, rank1 = _run("errors", tmp_path)
    # rank 1 had the NaN: its own error; rank 0 names it.
    assert rank1["nan_on_rank_1"]["error"] == "ValueError"
    assert rank0["nan_on_rank_1"]["error"] == "DistributedError"
    assert "rank 1" in rank0["nan_on_rank_1"]["message"]
    assert "NaN" in rank0["nan_on_rank_1"]["message"]
    for r in (rank0, rank1):
        assert r["other_target"]["error"] == "ValueError"
        assert "same target" in r["other_target"]["message"]
        assert "number of features" in r["other_features"]["message"]
        assert "X_target" in r["no_target"]["message"]
        assert "partial_fit" in r["partial_fit"]["message"]
        assert r["then_fit"]["error"] is None  # the group survives the errors


def test_a_rank_that_never_fits_times_out_with_a_clear_error(tmp_path):
    rank0, rank1 = _run("rank_stops", tmp_path, timeout_s=5)
    assert rank1["error"] is None
    assert rank0["error"] == "DistributedError"
    assert "Another rank probably stopped" in rank0["message"]
    assert rank0["seconds"] < 60


def test_distributed_without_a_process_group_is_a_clear_error(rng):
    if torch.distributed.is_initialized():
        pytest.skip("a process group is initialised in this process")
    X, Y = rng.normal(size=(100, 2)), rng.normal(size=(5, 2))
    with pytest.raises(ValueError, match="init_process_group"):
        OTNetTransport(distributed=True).fit(X, X_target=Y)


def test_one_process_group_fits_like_no_group(rng, tmp_path):
    """A process group of one rank: the same fit as without one (the collectives' path)."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    X, Y = rng.normal(size=(3000, 2)), rng.normal(size=(20, 2))
    plain = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        grouped = OTNetTransport(height="vector", random_state=0, distributed=True)
        grouped.fit(X, X_target=Y)
    finally:
        dist.destroy_process_group()
    # Explicit weights 1/n instead of uniform ones: the same fit up to float rounding.
    np.testing.assert_allclose(grouped.heights_, plain.heights_, atol=1e-4)
    fresh = rng.normal(size=(20000, 2))
    assert (grouped.predict_index(fresh) == plain.predict_index(fresh)).mean() >= 0.999
    assert grouped.n_iter_ == plain.n_iter_
    with pytest.raises(ValueError, match="init_process_group"):
        grouped.fit(X, X_target=Y)  # the group is gone: a clear error again


def test_distributed_error_is_exported():
    assert issubclass(DistributedError, RuntimeError)


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    return _run("targets", tmp_path_factory.mktemp("targets"))


@pytest.mark.parametrize("name", [*DETERMINISTIC, "vector_adam_batches"])
def test_target_sharding_equals_one_process(targets, name):
    rank0, rank1 = targets
    a, b, single = rank0[name]["dist"], rank1[name]["dist"], rank0[name]["single"]
    # The same rows on every rank and exact merges of the shards' best cells: one process's
    # fit, bit for bit (the Monte Carlo draws too: every rank draws the same rows).
    np.testing.assert_array_equal(a["heights"], b["heights"])
    np.testing.assert_array_equal(a["heights"], single["heights"])
    np.testing.assert_array_equal(a["index"], single["index"])
    assert a["n_iter"] == single["n_iter"]
    if name == DETERMINISTIC[0]:
        for r in (rank0, rank1):
            assert r["other_rows"]["error"] == "ValueError"
            assert "different X" in r["other_rows"]["message"]


def test_example_script_runs_under_torchrun(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "distributed_fit.py"
    out = tmp_path / "map.pkl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(example), "--samples", "6000", "--targets", "50", "--features", "3"]
    cmd += ["--device", "cpu", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "2 ranks, data parallel" in proc.stdout
    with open(out, "rb") as f:
        ot = pickle.load(f)
    assert ot.converged_
    assert ot.transform(np.zeros((2, 3))).shape == (2, 3)
