"""
Colour transfer between two photographs
=======================================

Give a photograph the colours of another one: treat the pixels' RGB colours as points in 3-D,
learn the optimal transport map from the source image's colours onto the reference image's
colours, and map every pixel through it.

The map is learned on a random sample of source pixels (onto a sample of reference colours),
then applied to **all** the pixels of the source image: out-of-sample mapping is one matrix
product and a row argmax, so the whole image is mapped in a fraction of the fitting time.

The hard map gives every pixel one reference colour, so the smooth parts of the source (the
sky, with its JPEG blocks) break into blocky patches. The command line's default therefore
smooths the colour *change* (mapped minus source colour) with a guided filter whose guide is
the source image: edge-aware, it follows the source's edges and adds none. The same thing from
the command line (``--hard`` keeps the sharp map)::

    skot color-transfer china.png flower.png result.png --progress -v
"""

# %%
# Load the images shipped with scikit-learn
# -----------------------------------------
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
_here = Path(globals().get("__file__", "examples/plot_color_transfer.py")).resolve().parent
FIGURE_DIR = Path(os.environ.get("SKOT_FIGURE_DIR") or _here / "figures")
FIGURE_DIR.mkdir(parents=True, exist_ok=True)

source_image = load_sample_image("china.jpg")
reference_image = load_sample_image("flower.jpg")
if FAST:  # a smaller image, so the test suite stays quick
    source_image = source_image[::4, ::4]
pixels = source_image.reshape(-1, 3).astype(np.float32) / 255.0
reference_pixels = reference_image.reshape(-1, 3).astype(np.float32) / 255.0
print(f"source {source_image.shape[1]}x{source_image.shape[0]}: {pixels.shape[0]} pixels")

# %%
# Fit on a sample of pixels
# -------------------------
# ``n_fit`` source pixels are mapped onto ``n_colors`` reference pixels (uniform weights): the
# map gives every reference colour the same share of the source image.
#
# 8-bit colours come in bins of width 1/255, so many sampled pixels share exactly one colour,
# and a hard map cannot split one colour between two cells: without the step below, the
# marginal error stayed at 0.047 after 3,000 steps. Spreading each sampled colour uniformly
# over its bin (dequantisation) removes that floor.
n_fit, n_colors = (1_000, 64) if FAST else (5_000, 128)  # the command line's defaults
rng = np.random.default_rng(0)
X = pixels[rng.choice(pixels.shape[0], n_fit, replace=False)]
Y = reference_pixels[rng.choice(reference_pixels.shape[0], n_colors, replace=False)]
X = X + rng.uniform(-0.5 / 255, 0.5 / 255, size=X.shape).astype(np.float32)

t0 = time.perf_counter()
ot = OTNetTransport(height="vector", max_iter=300 if FAST else 1000, tol=0.05, random_state=0)
ot.fit(X, X_target=Y)
fit_seconds = time.perf_counter() - t0
print(
    f"fit: {n_fit} source pixels onto {n_colors} reference colours, {ot.n_iter_} steps, "
    f"marginal error {ot.marginal_error_:.3f}, {fit_seconds:.2f} s"
)

# %%
# Map the whole image
# -------------------
t0 = time.perf_counter()
mapped = ot.transform(pixels)
map_seconds = time.perf_counter() - t0
hard = (np.clip(mapped, 0, 1) * 255).round().astype(np.uint8).reshape(source_image.shape)
print(
    f"transform: all {pixels.shape[0]} pixels in {map_seconds:.2f} s "
    f"({pixels.shape[0] / max(map_seconds, 1e-9) / 1e6:.2f} million pixels per second)"
)

# %%
# Smooth the colour change, guided by the source
# ----------------------------------------------
# The command line's smoothing step: a guided filter (He et al. 2010) of the displacement
# ``mapped - source`` with the source image as guide, radius ``min(height, width) / 50``.
# The spurious-edge score counts pixels whose output gradient is strong where the source's is
# weak: edges the transfer invented.
from skot._cli import _default_radius, _smooth_transfer, _spurious_edges  # noqa: E402

t0 = time.perf_counter()
smooth = _smooth_transfer(source_image, mapped, _default_radius(source_image.shape))
result = (np.clip(smooth, 0, 1) * 255).round().astype(np.uint8).reshape(source_image.shape)
scores = [_spurious_edges(source_image, image) for image in (hard, result)]
print(
    f"guided filter: {time.perf_counter() - t0:.2f} s; spurious edges: hard map "
    f"{scores[0]:.4f}, smoothed {scores[1]:.4f}"
)

# %%
# The result
# ----------
fig, axes = plt.subplots(2, 2, figsize=(11, 7.6), layout="constrained")
for ax, image, title in zip(
    axes.ravel(),
    (source_image, reference_image, hard, result),
    (
        "source (china.jpg)",
        "reference (flower.jpg)",
        "hard map (--hard): blocky sky",
        "default: colour change smoothed, guided by the source",
    ),
    strict=True,
):
    ax.imshow(image)
    ax.set_title(title)
    ax.axis("off")
fig.savefig(FIGURE_DIR / "color_transfer_images.png", dpi=90)

# %%
# The hard map gives every pixel one of the ``n_colors`` reference colours, so smooth
# gradients of the source (the sky) become patches of nearby reference colours along the JPEG
# blocks of the source; the guided filter spreads the colour change smoothly inside the sky
# and keeps it sharp along the pagoda's edges.
#
# The colour distributions, projected on the red-green plane: the mapped image's colours are
# the reference's colours, spread over the source image in proportion.
show = rng.choice(pixels.shape[0], 3_000, replace=False)
fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True, layout="constrained")
clouds = (
    ("source colours", pixels[show]),
    ("reference colours", reference_pixels[rng.choice(reference_pixels.shape[0], 3_000)]),
    ("mapped colours", mapped[show]),
)
for ax, (title, colours) in zip(axes, clouds, strict=True):
    ax.scatter(colours[:, 0], colours[:, 1], c=np.clip(colours, 0, 1), s=3)
    ax.set_title(title)
    ax.set_xlabel("red")
axes[0].set_ylabel("green")
fig.savefig(FIGURE_DIR / "color_transfer_clouds.png", dpi=100)
print(f"figures written to {FIGURE_DIR}")
