"""Streams: ``partial_fit`` after a converged ``fit`` on fresh data from the same distribution,
and the population accuracy it reaches, for each height parameterisation; and a stream
started from scratch (``partial_fit`` calls, no fit) against a fit on the same rows."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from ._util import load_note, md_table, section_header

__all__ = ["run"]


def _population_tv(est, X_fresh: np.ndarray) -> float:
    return -est.score(X_fresh)


def _case(height: str, n_fit: int, m: int, calls: list[int], rows: int, n_fresh: int, seed: int):
    from skot import OTNetTransport

    rng = np.random.default_rng(seed)
    Y = rng.uniform(-2, 2, size=(m, 2))
    X_fresh = rng.normal(size=(n_fresh, 2))
    est = OTNetTransport(height=height, tol=1e-3, random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(rng.normal(size=(n_fit, 2)), X_target=Y)
    fit_s = time.perf_counter() - start
    row = [height, n_fit, est.marginal_error_, _population_tv(est, X_fresh)]
    done, worst, stream_s = 0, 0.0, 0.0
    for target in calls:
        while done < target:
            batch = rng.normal(size=(rows, 2))
            t = time.perf_counter()
            est.partial_fit(batch, X_target=Y)
            stream_s += time.perf_counter() - t
            done += 1
            if done <= 10:
                worst = max(worst, _population_tv(est, X_fresh))
        row.append(_population_tv(est, X_fresh))
    return row + [worst, fit_s, stream_s / max(done, 1)]


def _scratch(height: str, n: int, m: int, rows: int, n_fresh: int, seed: int):
    """A stream from scratch over ``n`` rows in calls of ``rows``, and a fit on those rows."""
    from skot import OTNetTransport

    rng = np.random.default_rng(seed)
    Y = rng.uniform(-2, 2, size=(m, 2))
    X_fresh = rng.normal(size=(n_fresh, 2))
    X = rng.normal(size=(n, 2))
    params = {"height": height, "tol": 1e-3, "random_state": seed}
    out = [height]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = OTNetTransport(**params)
        start = time.perf_counter()
        for r0 in range(0, n, rows):
            stream.partial_fit(X[r0 : r0 + rows], X_target=Y)
        stream_s = time.perf_counter() - start
        fit = OTNetTransport(**params)
        start = time.perf_counter()
        fit.fit(X, X_target=Y)
        fit_s = time.perf_counter() - start
    tv_stream, tv_fit = _population_tv(stream, X_fresh), _population_tv(fit, X_fresh)
    return out + [tv_stream, tv_fit, tv_stream / tv_fit, stream_s, fit_s]


def _scratch_section(quick: bool) -> str:
    if quick:
        n, m, rows, n_fresh, heights = 4000, 20, 500, 20_000, ["vector"]
    else:
        n, m, rows, n_fresh = 1_000_000, 1000, 10_000, 4_000_000
        heights = ["vector", "residual"]
    table = [_scratch(h, n, m, rows, n_fresh, seed=0) for h in heights]
    header = ["height", "population TV, stream", "population TV, fit", "stream / fit"]
    header += ["stream (s)", "fit (s)"]
    text = (
        f"\n### From scratch: one pass of partial_fit against a fit on the same rows\n\n"
        f"The same problem; {n:,} samples, given once to `partial_fit` in calls of {rows:,} "
        f"rows from an unfitted estimator (tol = 1e-3), and to `fit` at once. Free heights "
        "keep the stream's rows in a buffer and solve it by Newton steps each time it has "
        "doubled (and when it reaches 10^6 rows). Population TV on "
        f"{n_fresh:,} fresh points. **Target (issue 15, item 2): the stream within 1.3 x the "
        "fit.**\n\n"
    )
    return text + md_table(header, table)


def run(quick: bool, fig_dir: Path) -> str:
    """Population TV before and after streams of ``partial_fit`` calls; the Markdown section."""
    start, load = time.perf_counter(), load_note()
    if quick:
        n_fit, m, calls, rows, n_fresh, heights = 2000, 20, [1, 5], 200, 20_000, ["vector"]
    else:
        n_fit, m, calls, rows, n_fresh = 200_000, 1000, [1, 10, 100, 800], 1000, 4_000_000
        heights = ["vector", "residual", "network"]
    rows_out = [_case(h, n_fit, m, calls, rows, n_fresh, seed=0) for h in heights]
    header = ["height", "fit rows", "fit TV (sample)", "population TV after fit"]
    header += [f"after {k} calls" for k in calls]
    header += ["worst of the first 10", "fit (s)", "s / call"]
    noise = 0.4 * np.sqrt(m / n_fresh)
    text = section_header(
        "Streams: partial_fit after fit", quick, time.perf_counter() - start, load
    )
    text += (
        f"Source N(0, I) in d = 2, m = {m:,} targets uniform on [-2, 2]^2 with equal weights. "
        f"`fit` on {n_fit:,} samples (tol = 1e-3, defaults otherwise), then `partial_fit` calls "
        f"of {rows:,} fresh rows each. Population TV: the marginal error of the map on "
        f"{n_fresh:,} fresh points (their own noise is about {noise:.4f}). The target of the "
        "stream issue: never above 1.1 x the fit's + 0.005; more rows go below what the fit's "
        "sample allows (its own noise is about 0.4 sqrt(m / n)).\n\n"
    )
    text += md_table(header, rows_out)
    return text + _scratch_section(quick)
