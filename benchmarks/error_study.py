"""Empirical error study mirroring OT-Net's error analysis: map error (L2-UVP) and marginal
error versus the number of Monte Carlo samples, the network's width and depth, and the number of
targets, on the exact max-affine problem."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from ._util import load_note, md_table, section_header
from .accuracy import evaluate
from .problems import max_affine

__all__ = ["fit_rate", "run"]

_SYMBOLS = {
    "source samples n": "n",
    "width (2 hidden layers)": "width",
    "depth (width 32)": "depth",
    "number of targets m": "m",
}


def fit_rate(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the empirical rate)."""
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.maximum(np.asarray(ys, float), 1e-12))
    return float(np.polyfit(lx, ly, 1)[0])


def _fit_eval(problem, hidden, params) -> dict:
    from skot import OTNetTransport

    est = OTNetTransport(height="network", hidden_layer_sizes=hidden, random_state=0, **params)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(problem.X_train, X_target=problem.support, target_weight=problem.weights)
    out = evaluate(problem, est.transform(problem.X_test))
    out.update(train_tv=est.marginal_error_, steps=est.n_iter_, seconds=time.perf_counter() - start)
    return out


def run(quick: bool, fig_dir: Path) -> str:
    """Run the four sweeps; return the Markdown section (and a figure)."""
    start, load = time.perf_counter(), load_note()
    if quick:
        ns, widths, depths, pieces = [100, 400], [4, 16], [1, 2], [3, 6]
        base_n, base_k, base_w, n_w, k = 200, 4, 8, 20_000, 2000
        params = {"max_iter": 20, "tol": 1e-3, "batch_size": 256}
    else:
        ns, widths, depths, pieces = [250, 1000, 4000, 16000], [8, 32, 128], [1, 2, 3], [4, 16, 64]
        base_n, base_k, base_w, n_w, k = 4000, 16, 64, 20_000_000, 20_000
        params = {"max_iter": 800, "tol": 1e-3, "batch_size": 1024}
    d = 2

    def problem(n: int, n_pieces: int):
        # The target is the exact push-forward (weights from n_w draws), so that the error
        # comes from the source sample and the network, not from noisy target weights.
        return max_affine(d, n_pieces, n, 10, k, seed=3, weight_samples=n_w)

    sweeps: dict[str, list] = {}
    sweeps["source samples n"] = [
        (n, _fit_eval(problem(n, base_k), (base_w, base_w), params)) for n in ns
    ]
    sweeps["width (2 hidden layers)"] = [
        (w, _fit_eval(problem(base_n, base_k), (w, w), params)) for w in widths
    ]
    sweeps["depth (width 32)"] = [
        (L, _fit_eval(problem(base_n, base_k), (32,) * L, params)) for L in depths
    ]
    sweeps["number of targets m"] = [
        (K, _fit_eval(problem(base_n, K), (base_w, base_w), params)) for K in pieces
    ]
    parts, rates = [], []
    for name, results in sweeps.items():
        rows = [
            [x, r["uvp"], r["tv"], r["train_tv"], r["cost_ratio"], r["steps"], r["seconds"]]
            for x, r in results
        ]
        xs = [x for x, _ in results]
        r_uvp = fit_rate(xs, [r["uvp"] for _, r in results])
        r_tv = fit_rate(xs, [r["tv"] for _, r in results])
        sym = _SYMBOLS[name]
        rates.append(f"- {name}: L2-UVP ~ {sym}^{r_uvp:.2f}, test TV ~ {sym}^{r_tv:.2f}")
        parts.append(
            f"### Versus {name}\n\n"
            + md_table(
                ["value", "L2-UVP (%)", "test TV", "train TV", "cost / true", "steps", "fit (s)"],
                rows,
            )
        )
        print(f"  {name}: {rows}", flush=True)
    fig = _plot(sweeps, fig_dir / "benchmarks_error_study.png")
    intro = (
        f"Max-affine ground truth in d = {d} (source N(0, I), exact piecewise-constant map), "
        f"target: the pieces' slopes a_k weighted by their cells' masses (estimated from "
        f"{n_w:,} source draws, so weight errors are about 1e-4), {k:,} test points. skot "
        f"with network heights ({base_w}, {base_w}) unless varied, {base_k} targets, "
        f"n = {base_n} unless varied; {', '.join(f'{a}={b}' for a, b in params.items())} (a "
        "tolerance below the default so that the sample and network errors show), "
        "random_state=0. Rates are least-squares slopes in log-log; with three or four points "
        "and one seed they are indicative only; the sweep over m changes the problem itself "
        "(other pieces), so its slope mixes problems. Test TV has a noise floor of about "
        f"0.5 sqrt(2 m / (pi {k})).\n\nFitted rates:\n\n"
        + "\n".join(rates)
        + "\n\n"
        + (f"![error study]({fig})\n\n" if fig else "")
    )
    head = section_header("Error study", quick, time.perf_counter() - start, load)
    return head + intro + "\n".join(parts)


def _plot(sweeps: dict, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4 * len(sweeps), 3.4))
    for ax, (name, results) in zip(axes, sweeps.items(), strict=True):
        xs = [x for x, _ in results]
        ax.loglog(xs, [max(r["uvp"], 1e-6) for _, r in results], "o-", label="L2-UVP (%)")
        ax.loglog(xs, [max(100 * r["tv"], 1e-6) for _, r in results], "s--", label="test TV (%)")
        ax.set(xlabel=name, title=f"vs {name}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
