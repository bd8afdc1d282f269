"""
Reuse: colour transfer onto a sequence of reference palettes
============================================================

A video grade, a slideshow, a palette that evolves: the reference changes a little from one
frame to the next, and each frame needs its own transport map. A warm start reuses the
previous frame's map, so each new frame costs less than a fit from scratch.

Here the source is one photograph (``china.jpg``); the reference palette is the colours of
``flower.jpg``, rotated a little further around the grey axis of the RGB cube at every frame.
The same reference pixels are followed from frame to frame, so they keep their identity:
``target_ids`` tells the estimator which new point is which old point, and each keeps its
trained height. Every frame is fitted twice, from scratch (cold) and from the previous frame
(warm), and the script prints the steps and seconds of each.
"""

# %%
# Data: one source image, a palette that turns a little at every frame
# --------------------------------------------------------------------
import os
import time
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_sample_image

from skot import OTNetTransport

FAST = os.environ.get("SKOT_FAST") == "1"
_here = Path(globals().get("__file__", "examples/plot_reuse_color_sequence.py")).resolve().parent
FIGURE_DIR = Path(os.environ.get("SKOT_FIGURE_DIR") or _here / "figures")
FIGURE_DIR.mkdir(parents=True, exist_ok=True)

source_image = load_sample_image("china.jpg")[::4, ::4]  # mapped whole at every frame
pixels = source_image.reshape(-1, 3).astype(np.float64) / 255.0
reference = load_sample_image("flower.jpg").reshape(-1, 3).astype(np.float64) / 255.0

n_fit, n_colors, n_frames = (1_000, 40, 3) if FAST else (10_000, 300, 6)
rng = np.random.default_rng(0)
X = pixels[rng.choice(pixels.shape[0], n_fit, replace=False)]
X = X + rng.uniform(-0.5 / 255, 0.5 / 255, size=X.shape)  # dequantise (see the colour example)
palette = reference[rng.choice(reference.shape[0], n_colors, replace=False)]
ids = np.arange(n_colors)  # each reference pixel keeps its identity across frames


def hue_rotation(degrees):
    """Rotation of RGB colours around the grey axis (Rodrigues' formula)."""
    axis = np.ones(3) / np.sqrt(3)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


grey = np.full(3, 0.5)
frames = [(palette - grey) @ hue_rotation(10.0 * k).T + grey for k in range(n_frames)]

# %%
# Cold and warm fits, frame by frame
# ----------------------------------
# ``height="residual"``: a network of the target point plus a free height per point. The
# network carries what the frames share; the free heights take Newton steps.
params = {"height": "residual", "tol": 0.02, "max_iter": 2000, "random_state": 0}
if FAST:
    params["hidden_layer_sizes"] = (32, 32)
# One-time costs (the first optimiser of a process imports part of torch) are paid on a tiny
# fit first, so that the timings compare fits, not imports.
OTNetTransport(**params).fit(X[:200], X_target=frames[0][:20])
warm = OTNetTransport(warm_start=True, **params)
rows, images = [], []
for k, frame in enumerate(frames):
    t = time.perf_counter()
    cold = OTNetTransport(**params).fit(X, X_target=frame)
    cold_s = time.perf_counter() - t
    before = warm.n_iter_ if k else 0
    t = time.perf_counter()
    warm.fit(X, X_target=frame, target_ids=ids)
    warm_s = time.perf_counter() - t
    rows.append((k, cold.n_iter_, cold_s, warm.n_iter_ - before, warm_s, warm.marginal_error_))
    images.append(np.clip(warm.transform(pixels), 0, 1).reshape(source_image.shape))

print("frame | cold steps | cold s | warm steps | warm s | warm TV")
for k, cs, ct, ws, wt, tv in rows:
    print(f"{k:5d} | {cs:10d} | {ct:6.2f} | {ws:10d} | {wt:6.2f} | {tv:.4f}")
later = rows[1:]  # frame 0 is a cold fit either way
cold_total = sum(r[2] for r in later)
warm_total = sum(r[4] for r in later)
print(
    f"frames 1-{n_frames - 1}: cold {cold_total:.1f} s, warm {warm_total:.1f} s "
    f"({100 * (1 - warm_total / cold_total):.0f}% of the time saved); steps "
    f"{sum(r[1] for r in later)} cold, {sum(r[3] for r in later)} warm"
)

# %%
# The frames and the cost of each
# -------------------------------
fig = plt.figure(figsize=(2.6 * n_frames, 5.6), layout="constrained")
grid = fig.add_gridspec(2, n_frames, height_ratios=[1, 1.1])
for k, image in enumerate(images):
    ax = fig.add_subplot(grid[0, k])
    ax.imshow(image)
    ax.set_title(f"frame {k} (hue +{10 * k} deg)", fontsize=9)
    ax.axis("off")
ax = fig.add_subplot(grid[1, :])
width = 0.38
frame_index = np.arange(n_frames)
ax.bar(frame_index - width / 2, [r[2] for r in rows], width, label="cold (fit from scratch)")
ax.bar(frame_index + width / 2, [r[4] for r in rows], width, label="warm (previous frame's map)")
ax.set_xticks(frame_index)
ax.set_xlabel("frame")
ax.set_ylabel("fit time (s)")
ax.legend()
fig.savefig(FIGURE_DIR / "reuse_color_sequence.png", dpi=90)
print(f"figure written to {FIGURE_DIR}")
