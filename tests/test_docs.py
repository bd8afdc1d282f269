"""A quick build of the documentation: Sphinx with warnings as errors, gallery not executed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    # Build a copy, so that generated files never land in (or come from) the checkout.
    ignore = shutil.ignore_patterns(
        "_build", "generated", "auto_examples", "sg_execution_times.rst", "figures", "__pycache__"
    )
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=ignore)
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=ignore)
    env = dict(os.environ, SKOT_DOCS_PLOT_GALLERY="0", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-W",
        "--keep-going",
        "-q",
        str(tmp_path / "docs"),
        str(tmp_path / "html"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    html = tmp_path / "html"
    for page in ("index", "getting_started", "user_guide", "command_line", "api"):
        assert (html / f"{page}.html").is_file(), page
    # The API reference was generated from the docstrings.
    api = (html / "generated" / "skot.OTNetTransport.html").read_text(encoding="utf-8")
    assert "partial_fit" in api and "marginal_error_curve_" in api
    assert (html / "generated" / "skot.plotting.plot_power_cells.html").is_file()
    # Every example has a gallery page.
    for example in sorted((ROOT / "examples").glob("plot_*.py")):
        assert (html / "auto_examples" / f"{example.stem}.html").is_file(), example.name
