"""The benchmark suite's quick mode, its report assembly and its ground-truth problems.

Quick mode runs every benchmark at tiny sizes into a temporary folder, so the benchmarks
cannot rot; nothing here asserts on timings.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ot")
pytest.importorskip("matplotlib")

from benchmarks import BENCHMARKS  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402
from benchmarks._util import md_table, run_isolated  # noqa: E402
from benchmarks.accuracy import evaluate  # noqa: E402
from benchmarks.error_study import fit_rate  # noqa: E402
from benchmarks.methods import fit_method  # noqa: E402
from benchmarks.problems import (  # noqa: E402
    gaussian_to_gaussian,
    gaussian_to_mixture,
    max_affine,
    nearest_index,
)
from benchmarks.report import write_benchmarks_md  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def test_quick_mode_writes_every_section_and_the_document(tmp_path):
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    for name in BENCHMARKS:
        text = (tmp_path / f"{name}.md").read_text()
        assert text.startswith("## ")
        assert "mode quick" in text
        assert "| " in text  # at least one table
    doc = (tmp_path / "benchmarks.md").read_text()
    assert doc.startswith("# Benchmarks")
    assert "## Accuracy against ground truth" in doc
    assert "## Error study" in doc
    for png in ("benchmarks_scale.png", "benchmarks_error_study.png"):
        assert (tmp_path / png).stat().st_size > 1000
    # The accuracy table names every method, POT's included.
    acc = (tmp_path / "accuracy.md").read_text()
    for method in ("skot-vector", "skot-network", "skot-residual", "pot-emd", "pot-sinkhorn"):
        assert f"| {method} |" in acc


def test_report_assembles_sections_in_order_with_machine_header(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "zeta.md").write_text("## Zeta\n\nz\n")
    (results / "reuse.md").write_text("## Reuse\n\nr\n")
    (results / "accuracy.md").write_text("## Accuracy\n\na\n")
    doc = write_benchmarks_md(results, tmp_path / "out" / "b.md")
    text = doc.read_text()
    for needle in (
        "Machine:",
        "cores",
        "RAM",
        "GPU:",
        "skot",
        "torch",
        "numpy",
        "scikit-learn",
        "POT",
        "Assembled:",
    ):
        assert needle in text
    assert text.index("## Accuracy") < text.index("## Reuse") < text.index("## Zeta")


def test_report_without_sections(tmp_path):
    text = write_benchmarks_md(tmp_path / "missing", tmp_path / "b.md").read_text()
    assert "No benchmark section" in text


def test_run_isolated_reports_peak_memory_of_a_fresh_process():
    res = run_isolated("benchmarks.scale:case_pot", {"n": 300, "m": 300, "d": 2, "solver": "emd"})
    assert res["status"] == "ok"
    assert res["tv"] < 1e-9
    # A 300 x 300 float64 problem: well under 100 MB above the baseline, but measured.
    assert 0 <= res["peak_mb"] < 100
    assert res["baseline_mb"] > 10


def test_run_isolated_reports_failures():
    res = run_isolated("benchmarks.scale:case_pot", {"n": 10, "m": 10, "d": 2, "solver": "x"})
    assert res["status"] == "ok"  # an unknown solver falls back to Sinkhorn
    res = run_isolated("benchmarks.scale:no_such_function", {})
    assert res["status"].startswith("failed")


def test_gaussian_ground_truth_is_the_linear_brenier_map():
    p = gaussian_to_gaussian(3, 10, 20000, 20000, seed=0)
    # T pushes the source test sample onto the target distribution: matching moments.
    np.testing.assert_allclose(np.cov(p.T_test.T), np.cov(p.X_target.T), atol=0.1)
    np.testing.assert_allclose(p.T_test.mean(0), p.X_target.mean(0), atol=0.05)
    # The map is the gradient of a convex function: a symmetric positive definite matrix.
    A = np.linalg.lstsq(p.X_test, p.T_test - p.T_test.mean(0), rcond=None)[0]
    np.testing.assert_allclose(A, A.T, atol=1e-4)
    assert np.linalg.eigvalsh((A + A.T) / 2).min() > 0


def test_max_affine_ground_truth_maps_onto_weighted_target_points():
    p = max_affine(2, 6, 100, 5000, 4000, seed=1)
    pts, w = p.target_points
    assert len(pts) <= 6 and np.isclose(w.sum(), 1)
    # Every true image is one of the target points.
    assert np.abs(pts[nearest_index(p.T_test, pts)] - p.T_test).max() == 0


def test_max_affine_weighted_target_is_the_exact_push_forward():
    p = max_affine(2, 6, 100, 50, 4000, seed=1, weight_samples=200_000, weighted_target=True)
    np.testing.assert_array_equal(p.X_target, p.support)
    np.testing.assert_array_equal(p.target_weight, p.weights)
    assert np.isclose(p.target_weight.sum(), 1) and (p.target_weight > 0).all()
    # The test images follow the exact weights (test-sample noise only, 4000 points).
    pts, w = p.target_points
    counts = np.bincount(nearest_index(p.T_test, pts), minlength=len(pts)) / len(p.T_test)
    assert 0.5 * np.abs(counts - w).sum() < 0.05
    # Same source samples as the sampled-target version of the problem.
    q = max_affine(2, 6, 100, 50, 4000, seed=1)
    np.testing.assert_array_equal(p.X_train, q.X_train)
    with pytest.raises(ValueError, match="weight_samples"):
        max_affine(2, 6, 100, 50, 10, weighted_target=True)


@pytest.mark.parametrize("method", ["pot-emd", "skot-vector"])
def test_weighted_target_equals_repeated_rows(method):
    rng = np.random.default_rng(0)
    X, Z = rng.normal(size=(300, 2)), rng.normal(size=(200, 2))
    Y = np.array([[-2.0, 0.0], [0.0, 1.5], [2.0, 0.0]])
    w = np.array([0.2, 0.3, 0.5])
    params = {"max_iter": 200, "tol": 1e-3}
    weighted = fit_method(method, X, Y, target_weight=w, skot_params=params)
    repeated = fit_method(method, X, np.repeat(Y, [2, 3, 5], axis=0), skot_params=params)
    np.testing.assert_allclose(weighted.transform(Z), repeated.transform(Z), atol=1e-9)


def test_skot_soft_is_sinkhorns_entropic_map():
    # The same entropic problem at the same temperature: the maps agree to the solvers'
    # tolerance (a temperature off by a factor 2 moves some images by 0.7 here).
    rng = np.random.default_rng(0)
    X, Z = rng.normal(size=(400, 2)), rng.normal(size=(500, 2))
    Y = rng.normal(size=(8, 2)) * 1.5
    soft = fit_method("skot-soft", X, Y, skot_params={"max_iter": 2000, "tol": 1e-5})
    sinkhorn = fit_method("pot-sinkhorn", X, Y)
    assert soft.info["converged"]
    np.testing.assert_allclose(soft.transform(Z), sinkhorn.transform(Z), atol=3e-3)


def test_sinkhorn_honours_target_weights():
    rng = np.random.default_rng(0)
    X, Z = rng.normal(size=(400, 2)), rng.normal(size=(2000, 2))
    Y = np.array([[-2.0, 0.0], [2.0, 0.0]])
    w = np.array([0.2, 0.8])
    mapped = fit_method("pot-sinkhorn", X, Y, target_weight=w).transform(Z)
    share = np.bincount(nearest_index(mapped, Y), minlength=2) / len(Z)
    np.testing.assert_allclose(share, w, atol=0.05)


def test_metrics_are_zero_for_the_truth_and_large_for_the_identity():
    p = max_affine(2, 5, 100, 20000, 4000, seed=2)
    exact = evaluate(p, p.T_test)
    assert exact["uvp"] == 0 and exact["cost_ratio"] == 1
    assert exact["tv"] < 0.05  # test-sample noise only
    ident = evaluate(p, p.X_test)
    assert ident["uvp"] > 10 and ident["cost_ratio"] == 0


def test_mixture_reference_is_a_one_to_one_assignment():
    p = gaussian_to_mixture(2, 3, 50, 100, 100, seed=0)
    # k = m: the exact plan is a permutation, so the reference images are target points.
    idx = nearest_index(p.T_test, p.X_target)
    np.testing.assert_allclose(p.X_target[idx], p.T_test, atol=1e-9)
    assert len(set(idx.tolist())) == 100


def test_fit_rate_recovers_a_power_law():
    xs = [10, 100, 1000]
    assert fit_rate(xs, [3 * x**-0.5 for x in xs]) == pytest.approx(-0.5)


def test_md_table_formats_floats_and_nan():
    text = md_table(["a", "b"], [[1.234567, float("nan")], ["x", 2]])
    assert "| 1.235 | n/a |" in text and "| x | 2 |" in text


def test_gpu_benchmark_runs_on_cpu_at_tiny_size(tmp_path):
    from benchmarks.gpu import main as gpu_main

    assert gpu_main(["--device", "cpu", "--tiny", "--write", str(tmp_path)]) == 0
    text = (tmp_path / "gpu.md").read_text()
    assert "## GPU" in text and "fraction of roofline" in text


def test_gpu_check_script_parses():
    script = REPO / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "pytest -m gpu" in script.read_text()


def test_command_line_rejects_unknown_benchmark():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_widest_margin_heights_carry_the_exact_assignment():
    """The heights found give every sample its assigned target with the reported margin, and
    the assignment is the optimal one (brute force over all permutations of 6 points)."""
    import itertools

    from benchmarks.assignment import widest_margin_heights

    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    sigma, h, margin, tried = widest_margin_heights(X, Y)
    best = max(
        itertools.permutations(range(6)), key=lambda p: sum(X[i] @ Y[p[i]] for i in range(6))
    )
    assert tuple(sigma) == best
    scores = X @ Y.T + h
    assert np.array_equal(scores.argmax(1), sigma)
    own = scores[np.arange(6), sigma]
    scores[np.arange(6), sigma] = -np.inf
    assert margin > 0 and np.isclose((own - scores.max(1)).min(), margin)
    assert tried > margin


def test_gpu_benchmark_leaves_the_kernel_choice_as_it_found_it():
    from benchmarks.gpu import run_gpu
    from skot import _kernels

    before = _kernels.GROUPED_REDUCTIONS
    run_gpu("cpu", tiny=True, large_fit=False)
    assert _kernels.GROUPED_REDUCTIONS is before
