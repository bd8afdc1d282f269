"""
Colour transfer between two photographs
=======================================

Give a photograph the colours of another one: treat the pixels' RGB colours as points in 3-D,
learn the optimal transport map from the source image's colours onto the reference image's
colours, and map every pixel through it.

The map is learned on a random sample of source pixels (onto a sample of reference colours),
then applied to **all** the pixels of the source image: out-of-sample mapping is one matrix
product and a row argmax, so the whole image is mapped in a fraction of the fitting time. The
same thing is available from the command line::

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
n_fit, n_colors = (1_000, 64) if FAST else (10_000, 300)
rng = np.random.default_rng(0)
X = pixels[rng.choice(pixels.shape[0], n_fit, replace=False)]
Y = reference_pixels[rng.choice(reference_pixels.shape[0], n_colors, replace=False)]
X = X + rng.uniform(-0.5 / 255, 0.5 / 255, size=X.shape).astype(np.float32)

t0 = time.perf_counter()
ot = OTNetTransport(height="vector", max_iter=300 if FAST else 800, tol=0.05, random_state=0)
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
result = (np.clip(mapped, 0, 1) * 255).round().astype(np.uint8).reshape(source_image.shape)
print(
    f"transform: all {pixels.shape[0]} pixels in {map_seconds:.2f} s "
    f"({pixels.shape[0] / max(map_seconds, 1e-9) / 1e6:.2f} million pixels per second)"
)

# %%
# The result
# ----------
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
for ax, image, title in zip(
    axes,
    (source_image, reference_image, result),
    ("source (china.jpg)", "reference (flower.jpg)", "source with the reference's colours"),
    strict=True,
):
    ax.imshow(image)
    ax.set_title(title)
    ax.axis("off")
fig.savefig(FIGURE_DIR / "color_transfer_images.png", dpi=100)

# %%
# The hard map gives every pixel one of the ``n_colors`` reference colours, so smooth
# gradients of the source (the sky) become bands of nearby reference colours, and the JPEG
# blocks of the source show. More reference colours make the bands finer; ``epsilon > 0``
# (a smooth, entropic map) blends neighbouring colours instead.
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
