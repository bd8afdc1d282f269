"""
Training curves: marginal error versus steps
============================================

:class:`skot.OTNetTransport` minimises a convex energy whose gradient is the difference
between the mass of each power cell and the target weight of its point. Its progress is
measured by the *marginal error*: the total variation between the cell masses (over the whole
training sample) and the target weights. Training stops once it is under ``tol``.

The estimator records ``marginal_error_curve_`` (``(step, error)`` at every evaluation) and
``loss_curve_`` (the energy at every step). This example compares the three height
parameterisations, then shows the point of OT-Net: a network trained on one target gives good
heights for a *changed* target at once, so fine-tuning it (``warm_start=True``) takes far fewer
steps than starting afresh.
"""

# %%
# A source and a target
# ---------------------
import os
import time
import warnings
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skot import OTNetTransport
from skot.plotting import plot_training_curve

FAST = os.environ.get("SKOT_FAST") == "1"
_here = Path(globals().get("__file__", "examples/plot_training_curve.py")).resolve().parent
FIGURE_DIR = Path(os.environ.get("SKOT_FIGURE_DIR") or _here / "figures")
FIGURE_DIR.mkdir(parents=True, exist_ok=True)

rng = np.random.default_rng(0)
n_source, n_target = (2_000, 40) if FAST else (6_000, 120)
max_iter = 150 if FAST else 600
TOL = 1e-2  # the discreteness floor of n samples in m cells is about m / (4 n)
X = rng.normal(size=(n_source, 2))
# The target: points on a noisy ring.
angle = rng.uniform(0, 2 * np.pi, n_target)
radius = 2.0 + 0.3 * rng.normal(size=n_target)
Y = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])

# %%
# Three height parameterisations
# ------------------------------
# ``"vector"``: one free height per target point (the classic semi-discrete solver).
# ``"network"``: heights from a neural network of the target point (OT-Net).
# ``"residual"``: the network plus a free correction per point.
fits = {}
print(f"{'height':10s} {'steps':>6s} {'seconds':>8s} {'marginal error':>15s} {'converged':>10s}")
for height in ("vector", "network", "residual"):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = OTNetTransport(height=height, max_iter=max_iter, tol=TOL, random_state=0)
        est.fit(X, X_target=Y)
    seconds = time.perf_counter() - t0
    fits[height] = est
    print(
        f"{height:10s} {est.n_iter_:6d} {seconds:8.2f} {est.marginal_error_:15.4f} "
        f"{str(est.converged_):>10s}"
    )

fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True, layout="constrained")
for ax, (height, est) in zip(axes, fits.items(), strict=True):
    plot_training_curve(est, ax=ax)
    ax.set_title(f'height="{height}"')
fig.savefig(FIGURE_DIR / "training_curves.png", dpi=100)

# %%
# The energy
# ----------
# ``loss_curve_`` is the energy ``E(h)`` at every step: a Monte Carlo estimate while the batch
# is smaller than the sample (noisy: it can even fall below the minimum), exact once the batch
# is the whole sample. On a linear scale (left) the noise of the first steps hides the rest;
# the gap to the final energy on a log scale (right) shows the steady decrease towards the
# minimum, where every cell has its target mass.
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for height, est in fits.items():
    energy = np.asarray(est.loss_curve_)
    steps = np.arange(1, energy.size + 1)
    axes[0].plot(steps, energy, label=height, lw=1)
    gap = energy - energy[-1]
    keep = gap > 0  # the last step and Monte Carlo estimates below the minimum are left out
    axes[1].plot(steps[keep], gap[keep], label=height, lw=1)
axes[0].set_ylabel("energy E(h) (standardised units)")
axes[0].set_title("energy")
axes[1].set_yscale("log")
axes[1].set_ylabel("E(h) - final E(h)")
axes[1].set_title("gap to the final energy (log scale)")
for ax in axes:
    ax.set_xlabel("optimisation step")
    ax.legend()
fig.savefig(FIGURE_DIR / "training_energy.png", dpi=100)

# %%
# Reuse on a changed target
# -------------------------
# Move every target point a little and add 10% new points on the ring: the kind of change a
# reusable solver is for. A fresh fit starts from the nearest-point (Voronoi) heights; the
# trained network, evaluated on the changed points, starts much closer to the answer.
k = n_target // 10
angle_new = rng.uniform(0, 2 * np.pi, k)
radius_new = 2.0 + 0.3 * rng.normal(size=k)
Y_new = np.vstack(
    [
        Y + 0.03 * rng.normal(size=Y.shape),
        np.column_stack([radius_new * np.cos(angle_new), radius_new * np.sin(angle_new)]),
    ]
)

t0 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    cold = OTNetTransport(height="network", max_iter=max_iter, tol=TOL, random_state=1)
    cold.fit(X, X_target=Y_new)
cold_seconds = time.perf_counter() - t0

warm = fits["network"]
steps_before, n_curve = warm.n_iter_, len(warm.marginal_error_curve_)
t0 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    warm.set_params(warm_start=True).fit(X, X_target=Y_new)
warm_seconds = time.perf_counter() - t0
warm_curve = [(s - steps_before, e) for s, e in warm.marginal_error_curve_[n_curve:]]

print(f"\nchanged target, {'start':10s} {'steps':>6s} {'seconds':>8s} {'first error':>12s}")
print(
    f"{'':16s}{'cold':10s} {cold.n_iter_:6d} {cold_seconds:8.2f} "
    f"{cold.marginal_error_curve_[0][1]:12.4f}"
)
print(
    f"{'':16s}{'warm':10s} {warm.n_iter_ - steps_before:6d} {warm_seconds:8.2f} "
    f"{warm_curve[0][1]:12.4f}"
)

# %%
# Part of the gain is the schedule: the warm start keeps the batch size the first fit grew to
# (up to the whole sample, where steps are exact), while the cold start begins with small,
# noisy Monte Carlo batches and plateaus until its batch grows.
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
for label, curve in (
    ("cold start", cold.marginal_error_curve_),
    ("warm start (trained network)", warm_curve),
):
    steps, errors = zip(*curve, strict=True)
    ax.plot(steps, errors, marker="o", markersize=3, label=label)
ax.axhline(TOL, color="tab:red", ls="--", lw=1, label="tol")
ax.set_yscale("log")
ax.set_xlabel("optimisation step on the changed target")
ax.set_ylabel("marginal error")
ax.legend()
fig.savefig(FIGURE_DIR / "training_reuse.png", dpi=100)
print(f"figures written to {FIGURE_DIR}")
