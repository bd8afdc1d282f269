"""
Generating digits with OT-Net (AE-OT sampling)
==============================================

A semi-discrete optimal transport map from a uniform latent distribution onto a data set is a
generative model: every latent point falls in the power cell of one training point. The bare
map only returns copies of the training points; :class:`skot.sampling.OTNetSampler`
interpolates between neighbouring cells whose supporting planes meet at a small angle, which
makes new points inside the data's modes without bridging the gaps between them (AE-OT).

Here scikit-learn's digits are encoded by PCA, OT-Net samples in that latent space, and the
samples are decoded back to images, next to samples of
:class:`~sklearn.mixture.GaussianMixture` and :class:`~sklearn.neighbors.KernelDensity` fitted
on the same latent codes. Three measures compare them:

* **mode coverage**: the class distribution of the generated digits under a classifier trained
  on real digits (a separate half of the data), against the real class distribution (total
  variation, lower is better);
* **fidelity**: the classifier's mean confidence (highest class probability) on the samples;
* **novelty**: the distance of each sample to its nearest training code, divided by the median
  nearest-neighbour distance within the training codes (0 means copies).

Set ``SKOT_FAST=1`` for a tiny run (a few seconds); figures go to ``SKOT_FIGURE_DIR``.
"""

# %%
# Data, encoder and the reference classifier
# ------------------------------------------
# One half of the digits trains the generative models (through a 16-component PCA), the other
# half trains the classifier that judges the samples, so that copies of training digits are
# judged like unseen real digits.
import os
import time
import warnings
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KernelDensity, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skot.sampling import OTNetSampler

FAST = os.environ.get("SKOT_FAST") == "1"
_here = Path(globals().get("__file__", "examples/plot_generate_digits.py")).resolve().parent
FIGURE_DIR = Path(os.environ.get("SKOT_FIGURE_DIR") or _here / "figures")
FIGURE_DIR.mkdir(parents=True, exist_ok=True)

N_COMPONENTS = 8 if FAST else 16
N_LATENT = 3000 if FAST else 20000
N_GENERATE = 500 if FAST else 5000
SEEDS = (10,) if FAST else (10, 11, 12, 13, 14)  # not the seed used to fit
THRESHOLDS = (0.0, 30.0) if FAST else (0.0, 20.0, 30.0, 45.0)  # besides the default, "auto"

X, y = load_digits(return_X_y=True)
if FAST:
    X, y = X[:400], y[:400]
X_gen, X_clf, y_gen, y_clf = train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)

pca = PCA(n_components=N_COMPONENTS, random_state=0).fit(X_gen)
codes = pca.transform(X_gen)
classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
classifier.fit(X_clf, y_clf)
real_classes = np.bincount(y_gen, minlength=10) / len(y_gen)
print(
    f"{len(X_gen)} training digits, {N_COMPONENTS} PCA components, "
    f"classifier accuracy on them {classifier.score(X_gen, y_gen):.3f}"
)

# %%
# The three generative models
# ---------------------------
# OT-Net learns the map from ``N_LATENT`` uniform latent points (in 16 dimensions, the codes'
# dimension) onto the codes, **with its defaults** (free heights, Adam steps, ``tol=0.02``,
# the ``"auto"`` angle threshold, 8 neighbours); the baselines get their usual model
# selection: the number of Gaussian components by BIC, the kernel bandwidth by
# cross-validated likelihood.
start = time.perf_counter()
with warnings.catch_warnings():
    if FAST:  # the tiny run may stop early
        warnings.simplefilter("ignore", ConvergenceWarning)
    otnet = OTNetSampler(n_latent=N_LATENT, random_state=0).fit(codes)
THRESHOLD = otnet.angle_threshold_  # degrees: the "auto" floor, shown in the figure
print(
    f"OT-Net: {time.perf_counter() - start:.1f}s, {otnet.transport_.n_iter_} steps, "
    f"marginal error {otnet.transport_.marginal_error_:.4f}, auto angle threshold at least "
    f"{THRESHOLD:.1f} deg"
)
print(
    "angle between a latent point's cell and its second-best cell (degrees), percentiles "
    "10/25/50/75/90: "
    + " / ".join(f"{otnet.angle_percentiles_[q]:.1f}" for q in (10, 25, 50, 75, 90))
)

start = time.perf_counter()
gmms = [
    GaussianMixture(k, covariance_type="full", random_state=0).fit(codes)
    for k in ((5, 10) if FAST else (5, 10, 20, 40))
]
gmm = min(gmms, key=lambda g: g.bic(codes))
print(f"GaussianMixture: {gmm.n_components} components (BIC), {time.perf_counter() - start:.1f}s")

start = time.perf_counter()
search = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-1, 1, 20)}, cv=3)
kde = search.fit(codes).best_estimator_
print(f"KernelDensity: bandwidth {kde.bandwidth:.3f} (CV), {time.perf_counter() - start:.1f}s")

# %%
# Measures
# --------
# ``decode`` maps codes back to images; the "real" row applies the same measures to the
# training codes themselves (a perfect copier), as a reference.
nn_codes = NearestNeighbors(n_neighbors=2).fit(codes)
code_rows = {row.tobytes() for row in codes}  # exact copies, bit for bit
typical_nn = np.median(nn_codes.kneighbors(codes)[0][:, 1])


def decode(z):
    return pca.inverse_transform(z)


def measures(z):
    proba = classifier.predict_proba(decode(z))
    shares = np.bincount(proba.argmax(axis=1), minlength=10) / len(z)
    distance = nn_codes.kneighbors(z, n_neighbors=1)[0][:, 0]
    return {
        "class TV": 0.5 * np.abs(shares - real_classes).sum(),
        "fidelity": proba.max(axis=1).mean(),
        "novelty": np.median(distance) / typical_nn,
        "copies": np.mean([row.tobytes() in code_rows for row in z]),
    }


def gmm_sample(n, random_state):
    # GaussianMixture.sample draws from the estimator's own random_state.
    return gmm.set_params(random_state=random_state).sample(n)[0]


def summarise(name, sample):
    runs = [measures(sample(N_GENERATE, random_state=seed)) for seed in SEEDS]
    mean = {k: np.mean([r[k] for r in runs]) for k in runs[0]}
    std = {k: np.std([r[k] for r in runs]) for k in runs[0]}
    print(
        f"{name:<30} {mean['class TV']:.3f} +- {std['class TV']:.3f}   "
        f"{mean['fidelity']:.3f} +- {std['fidelity']:.3f}   "
        f"{mean['novelty']:.3f}   {100 * mean['copies']:5.1f}%"
    )
    return mean


print(f"\n{len(SEEDS)} draws of {N_GENERATE} samples each (mean +- std over draws)")
print(f"{'model':<30} {'class TV':<14} {'fidelity':<17} novelty copies")
table = {"real": summarise("real (training codes)", lambda n, random_state: codes)}
for threshold in sorted({*THRESHOLDS, THRESHOLD}):
    # The default row is "auto" itself: per pair of cells, at least THRESHOLD.
    otnet.set_params(angle_threshold="auto" if threshold == THRESHOLD else threshold)
    name = "default (auto)" if threshold == THRESHOLD else f"{threshold:g} deg"
    table[f"OT-Net {threshold:g}"] = summarise(f"OT-Net, threshold {name}", otnet.sample)
table["GaussianMixture"] = summarise(f"GaussianMixture ({gmm.n_components})", gmm_sample)
table["KernelDensity"] = summarise(f"KernelDensity (bw {kde.bandwidth:.2f})", kde.sample)
# Narrower kernels than the cross-validated one: closer to copies, for a comparison at equal
# novelty.
kde_sweep = []
for factor in (0.5, 0.25):
    narrow = clone(kde).set_params(bandwidth=factor * kde.bandwidth).fit(codes)
    kde_sweep.append(summarise(f"KernelDensity (bw {narrow.bandwidth:.2f})", narrow.sample))
otnet.set_params(angle_threshold="auto")

# %%
# Samples, decoded
# ----------------
# Four rows of ten per model (the mixture's samples come grouped by component). OT-Net's
# samples stay between neighbouring training digits of the same mode: the panel under them
# shows the nearest training digit of each, identical where the sample is a copy (a latent
# point whose cell has no neighbour within the angle threshold), slightly different where it
# is new. The Gaussian mixture's and the kernel density's samples are noisier, as their lower
# fidelity says.
rows, cols = 4, 10
otnet_codes = otnet.sample(rows * cols, random_state=0)
nearest = codes[nn_codes.kneighbors(otnet_codes, n_neighbors=1)[1][:, 0]]
is_copy = np.array([row.tobytes() in code_rows for row in otnet_codes])
panels = {
    "training digits (PCA reconstruction)": codes[: rows * cols],
    f"OT-Net sampler, defaults (auto threshold >= {THRESHOLD:.1f} deg; the {is_copy.sum()} "
    "copies of training digits framed)": otnet_codes,
    "nearest training digit of each OT-Net sample above": nearest,
    f"GaussianMixture ({gmm.n_components} components)": gmm_sample(rows * cols, 0),
    f"KernelDensity (bandwidth {kde.bandwidth:.2f})": kde.sample(rows * cols, random_state=0),
}
fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.6 * len(panels)))
for ax, (title, z) in zip(axes, panels.items(), strict=True):
    images = decode(z).reshape(rows, cols, 8, 8).clip(0, 16)
    grid = np.full((rows * 9 - 1, cols * 9 - 1), 2.0)  # light grey separators
    for r in range(rows):
        for c in range(cols):
            grid[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = images[r, c]
    ax.imshow(grid, cmap="binary", vmin=0, vmax=16, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    if z is otnet_codes:
        for r, c in zip(*np.nonzero(is_copy.reshape(rows, cols)), strict=True):
            frame = plt.Rectangle(
                (c * 9 - 0.5, r * 9 - 0.5), 8, 8, fill=False, ec="tab:red", lw=1.5
            )
            ax.add_patch(frame)
fig.tight_layout()
fig.savefig(FIGURE_DIR / "generate_digits_samples.png", dpi=80)

# %%
# Fidelity against novelty
# ------------------------
# The angle threshold trades one for the other: 0 gives copies (novelty 0), larger thresholds
# interpolate further, until neighbouring cells of different digits get merged.
fig, ax = plt.subplots(figsize=(5, 4))
ot_rows = [(k, v) for k, v in table.items() if k.startswith("OT-Net")]
ax.plot(
    [v["novelty"] for _, v in ot_rows],
    [v["fidelity"] for _, v in ot_rows],
    "o-",
    label="OT-Net (threshold, deg)",
)
for k, v in ot_rows:
    ax.annotate(
        f"{float(k.split()[1]):.0f}",
        (v["novelty"], v["fidelity"]),
        textcoords="offset points",
        xytext=(4, 4),
    )
ax.plot(
    table["GaussianMixture"]["novelty"],
    table["GaussianMixture"]["fidelity"],
    "s",
    label="GaussianMixture (BIC)",
)
kde_rows = [table["KernelDensity"], *kde_sweep]
ax.plot(
    [v["novelty"] for v in kde_rows],
    [v["fidelity"] for v in kde_rows],
    "^--",
    label="KernelDensity (CV bandwidth, x1/2, x1/4)",
)
ax.set_xlabel("novelty (median NN distance / typical NN distance)")
ax.set_ylabel("fidelity (mean classifier confidence)")
ax.legend()
fig.tight_layout()
fig.savefig(FIGURE_DIR / "generate_digits_tradeoff.png", dpi=80)
