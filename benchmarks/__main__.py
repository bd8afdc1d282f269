"""``python -m benchmarks --quick|--full [--only NAME ...] [--out DIR] [--doc PATH]``."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from . import BENCHMARKS
from ._util import REPO, set_threads
from .report import DEFAULT_RESULTS, write_benchmarks_md

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, write their sections and assemble the document."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
    mode.add_argument("--full", action="store_true", help="the sizes reported in the docs")
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, metavar="NAME", help=f"among {BENCHMARKS}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the section files and figures (default: benchmarks/results for "
        "sections, docs/ for figures); with --out, everything goes there",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="document to assemble (default: docs/benchmarks.md, or OUT/benchmarks.md with --out)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for torch, BLAS and OpenMP (default: the libraries' own; --quick: 1)",
    )
    args = parser.parse_args(argv)
    set_threads(args.threads or (1 if args.quick else None))
    results = args.out if args.out is not None else DEFAULT_RESULTS
    figures = args.out if args.out is not None else REPO / "docs"
    doc = args.doc or (args.out / "benchmarks.md" if args.out is not None else None)
    results.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    for name in args.only or BENCHMARKS:
        start = time.perf_counter()
        print(f"== {name} ({'quick' if args.quick else 'full'})", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        section = module.run(quick=args.quick, fig_dir=figures)
        (results / f"{name}.md").write_text(section)
        print(section, flush=True)
        print(f"== {name} done in {time.perf_counter() - start:.0f} s", flush=True)
    path = write_benchmarks_md(results, doc)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
