"""Every example runs (in its fast mode) and writes at least one figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))


def test_examples_exist():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_saves_figures(example, tmp_path):
    pytest.importorskip("matplotlib")
    figures = tmp_path / "figures"
    env = dict(
        os.environ,
        SKOT_FAST="1",
        SKOT_FIGURE_DIR=str(figures),
        MPLBACKEND="Agg",
        PYTHONPATH=str(ROOT),
    )
    env.pop("DISPLAY", None)
    res = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert list(figures.rglob("*.png")), f"{example.name} wrote no PNG into SKOT_FIGURE_DIR"
