"""Benchmarks of skot against ground truth, POT and the machine's own matrix-multiply speed.

Run them all with ``python -m benchmarks --quick`` (seconds, tiny sizes) or ``--full`` (the
sizes reported in ``docs/benchmarks.md``); ``--only NAME`` restricts to some of them. Each
benchmark module ``benchmarks/<name>.py`` exposes ``run(quick, fig_dir) -> str`` returning a
Markdown section, which the entry point writes to ``<results-dir>/<name>.md``;
:func:`benchmarks.report.write_benchmarks_md` then assembles ``docs/benchmarks.md`` from every
section present, so sections written by different runs (and different scripts) coexist.
"""

__all__ = ["BENCHMARKS"]

#: Benchmark modules run by ``python -m benchmarks``, in report order.
BENCHMARKS = (
    "accuracy",
    "scale",
    "assignment",
    "throughput",
    "error_study",
    "reuse",
    "generation",
    "color_transfer",
    "stream",
    "stream_peers",
    "fit_speed",
    "distributed",
    "da",
)
