"""
A sharp map onto a disconnected target
======================================

The optimal transport map from a connected source (a uniform square) onto a target made of
two separate blobs must tear the square in two: points on one side of a line go to the left
blob, points on the other side to the right one. The map is discontinuous along that line.

:class:`skot.OTNetTransport` represents this exactly. Its map sends every point to the target
point whose *power cell* contains it (``argmax_j <x, y_j> + h_j``), so it is piecewise constant
and jumps across cell borders. An entropic map, such as the barycentric map of POT's
``ot.da.SinkhornTransport``, is smooth: points near the tear are sent to averages of both
blobs, into the empty gap between them.
"""

# %%
# Data: a uniform square onto two discs
# -------------------------------------
import os
import time
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from skot import OTNetTransport
from skot.plotting import plot_power_cells, plot_training_curve

FAST = os.environ.get("SKOT_FAST") == "1"
_here = Path(globals().get("__file__", "examples/plot_discontinuous_map.py")).resolve().parent
FIGURE_DIR = Path(os.environ.get("SKOT_FIGURE_DIR") or _here / "figures")
FIGURE_DIR.mkdir(parents=True, exist_ok=True)

rng = np.random.default_rng(0)
n_source, n_target = (2_000, 40) if FAST else (10_000, 150)
CENTERS, RADIUS = np.array([[-1.6, -0.3], [1.6, 0.4]]), 0.45


def sample_discs(k):
    """``k`` points, uniform on the union of the two discs."""
    which = rng.integers(0, 2, k)
    angle = rng.uniform(0, 2 * np.pi, k)
    radius = RADIUS * np.sqrt(rng.uniform(0, 1, k))
    return CENTERS[which] + radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])


def distance_to_support(P):
    """Distance from each row of ``P`` to the target's support (the two discs)."""
    d = np.linalg.norm(P[:, None, :] - CENTERS[None], axis=-1).min(axis=1)
    return np.maximum(d - RADIUS, 0.0)


X = rng.uniform(-1, 1, size=(n_source, 2))
Y = sample_discs(n_target)

# %%
# Fit the OT-Net map
# ------------------
# The heights ``h_j`` are a small neural network of the target points (``height="network"``,
# the OT-Net parameterisation). Training stops when every cell holds its target mass to within
# a total variation of ``tol``.
t0 = time.perf_counter()
otnet = OTNetTransport(height="network", tol=1e-2, random_state=0).fit(X, X_target=Y)
fit_seconds = time.perf_counter() - t0
print(
    f"OTNetTransport: {n_source} source samples onto {n_target} target points, "
    f"{otnet.n_iter_} steps in {fit_seconds:.2f} s, marginal error {otnet.marginal_error_:.4f}"
)

# %%
# The power cells
# ---------------
# Every source sample is coloured like the cell it falls in, and goes to that cell's target
# point (black cross). The cells of the left blob's points and those of the right blob's
# points meet along one line: the tear (red), where the map jumps across the gap.
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
plot_power_cells(otnet, X, ax=axes[0], resolution=250 if FAST else 500)
gx, gy = np.meshgrid(np.linspace(-1, 1, 201), np.linspace(-1, 1, 201))
right_blob = otnet.transform(np.column_stack([gx.ravel(), gy.ravel()]))[:, 0] > 0
axes[0].contour(gx, gy, right_blob.reshape(gx.shape), levels=[0.5], colors="red", linewidths=2.5)
axes[0].plot([], [], color="red", lw=2.5, label="the tear")
axes[0].legend(loc="lower right", fontsize=8)
axes[0].set_title("Power cells of the OT-Net map (source side)")
plot_training_curve(otnet, ax=axes[1])
fig.tight_layout()
fig.savefig(FIGURE_DIR / "discontinuous_map_cells.png", dpi=110)

# %%
# Compare with POT's entropic map
# -------------------------------
# POT (optional here) is fitted on a subsample: its entropic out-of-sample map needs the
# log-domain Sinkhorn, which is slow in NumPy, and the blur does not depend on the sample size
# but on ``reg_e``. The map is the softmax-weighted mean of the targets: near the tear, that
# mean lies between the blobs, where the target has no mass at all.
X_test = rng.uniform(-1, 1, size=(2_000 if FAST else 5_000, 2))
t0 = time.perf_counter()
T_otnet = otnet.transform(X_test)
map_seconds = time.perf_counter() - t0
rows = [("OTNetTransport (hard map)", fit_seconds, map_seconds, T_otnet)]
try:
    import ot as pot
except ImportError:
    pot = None
    print("POT is not installed (pip install pot): the entropic comparison is skipped.")
if pot is not None:
    n_sub = 500 if FAST else 1_000
    sinkhorns = {}
    for reg in (0.05, 0.01):
        t0 = time.perf_counter()
        sinkhorn = pot.da.SinkhornTransport(reg_e=reg, max_iter=2_000, tol=1e-5)
        sinkhorn.fit(Xs=X[:n_sub], Xt=Y)
        sinkhorns[reg] = sinkhorn
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        T_sink = sinkhorn.transform(Xs=X_test)
        rows.append(
            (f"POT SinkhornTransport, reg_e={reg}", fit_s, time.perf_counter() - t0, T_sink)
        )

print(f"\n{'map':40s} {'fit s':>7s} {'map s':>7s} {'in the gap':>11s} {'mean dist':>10s}")
for name, fit_s, map_s, T in rows:
    dist = distance_to_support(T)
    print(f"{name:40s} {fit_s:7.2f} {map_s:7.2f} {np.mean(dist > 0.05):11.1%} {dist.mean():10.4f}")
print("('in the gap': share of mapped points more than 0.05 away from the target's support)")
if pot is not None:
    print(f"(POT fitted on the first {n_sub} of the {n_source} source samples)")

# %%
# The images of the source, side by side. A sharp map puts all its mass on the two discs; the
# entropic map smears a bridge of mass across the gap.
fig, axes = plt.subplots(
    1, len(rows), figsize=(4.2 * len(rows), 2.3), sharex=True, sharey=True, layout="constrained"
)
axes = np.atleast_1d(axes)
theta = np.linspace(0, 2 * np.pi, 200)
for ax, (name, _, _, T) in zip(axes, rows, strict=True):
    ax.scatter(T[:, 0], T[:, 1], s=4, alpha=0.4, c=X_test[:, 0], cmap="coolwarm")
    for c in CENTERS:
        ax.plot(c[0] + RADIUS * np.cos(theta), c[1] + RADIUS * np.sin(theta), "k-", lw=0.8)
    ax.set_title(name, fontsize=9)
    ax.set_aspect("equal")
fig.suptitle("Images T(x) of uniform source points (colour: x coordinate of the source point)")
fig.savefig(FIGURE_DIR / "discontinuous_map_images.png", dpi=110)

# %%
# A profile across the tear
# -------------------------
# Walk along a horizontal line through the square and follow the first coordinate of the image.
# The OT-Net map jumps from one blob to the other; the entropic map slides through the gap.
line = np.column_stack([np.linspace(-1, 1, 400), np.full(400, 0.0)])
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(line[:, 0], otnet.transform(line)[:, 0], label="OTNetTransport", lw=2)
if pot is not None:
    for reg, sinkhorn in sinkhorns.items():
        ax.plot(line[:, 0], sinkhorn.transform(Xs=line)[:, 0], label=f"Sinkhorn, reg_e={reg}")
ax.axhspan(CENTERS[0, 0] + RADIUS, CENTERS[1, 0] - RADIUS, color="0.9", label="gap")
ax.set_xlabel("x (source, along y = 0)")
ax.set_ylabel("first coordinate of T(x)")
ax.legend(loc="upper left", fontsize=8)
fig.tight_layout()
fig.savefig(FIGURE_DIR / "discontinuous_map_profile.png", dpi=110)
print(f"figures written to {FIGURE_DIR}")
