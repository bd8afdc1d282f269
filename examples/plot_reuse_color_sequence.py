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
trained height, moved to first order with its colour (a new colour would take its height from
the network the previous fit learnt: ``predict_heights``). Every frame is fitted twice with
the default parameters, from scratch (cold) and from the previous frame (warm); the script
prints the steps and seconds of each and plots the time saved over the sequence.
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

n_fit, n_colors, n_frames = (1_000, 25, 3) if FAST else (10_000, 200, 6)
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
# The defaults: ``height="residual"`` solves a free height per reference colour by Newton
# steps, then fits its network to them, so a changed palette starts from the previous
# frame's heights. One-time costs (the first kernels of a process) are paid on a tiny fit
# first, so that the timings compare fits, not imports.
OTNetTransport(random_state=0).fit(X[:200], X_target=frames[0][:20])
warm = OTNetTransport(warm_start=True, random_state=0)
rows, images = [], []
for k, frame in enumerate(frames):
    t = time.perf_counter()
    cold = OTNetTransport(random_state=0).fit(X, X_target=frame)
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
    f"frames 1-{n_frames - 1}: cold {cold_total:.2f} s, warm {warm_total:.2f} s "
    f"({100 * (1 - warm_total / cold_total):.0f}% of the time saved); steps "
    f"{sum(r[1] for r in later)} cold, {sum(r[3] for r in later)} warm"
)

# %%
# The frames and the time saved
# -----------------------------
# Top: the source photograph recoloured at each frame (warm fits). Bottom left: each frame's
# fit time, from scratch and from the previous frame; bottom right: the time spent over the
# frames after the first (a cold fit either way), the saving growing with every frame.
fig = plt.figure(figsize=(2.2 * n_frames, 5.4), layout="constrained")
grid = fig.add_gridspec(2, n_frames, height_ratios=[1, 1.2])
for k, image in enumerate(images):
    ax = fig.add_subplot(grid[0, k])
    ax.imshow(image)
    ax.set_title(f"frame {k} (+{10 * k} deg)", fontsize=8)
    ax.axis("off")
half = n_frames // 2
ax = fig.add_subplot(grid[1, :half])
width = 0.38
frame_index = np.arange(n_frames)
ax.bar(frame_index - width / 2, [r[2] for r in rows], width, label="cold (from scratch)")
ax.bar(frame_index + width / 2, [r[4] for r in rows], width, label="warm (previous frame)")
for k, r in enumerate(rows):
    ax.annotate(f"{r[1]}", (k - width / 2, r[2]), ha="center", va="bottom", fontsize=7)
    ax.annotate(f"{r[3]}", (k + width / 2, r[4]), ha="center", va="bottom", fontsize=7)
ax.set_xticks(frame_index)
ax.set(xlabel="frame (numbers: steps)", ylabel="fit time (s)")
ax.legend(fontsize=8)
ax = fig.add_subplot(grid[1, half:])
ax.plot(frame_index[1:], np.cumsum([r[2] for r in later]), "o-", label="cold")
ax.plot(frame_index[1:], np.cumsum([r[4] for r in later]), "s-", label="warm")
ax.set_xticks(frame_index[1:])
ax.set_ylim(bottom=0)
ax.set(xlabel="frame", ylabel="total fit time from frame 1 (s)")
ax.legend(fontsize=8)
fig.savefig(FIGURE_DIR / "reuse_color_sequence.png", dpi=90)
print(f"figure written to {FIGURE_DIR}")
