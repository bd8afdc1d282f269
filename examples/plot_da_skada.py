"""
OT-Net in skada pipelines, and choosing its parameters without target labels
============================================================================

skada stacks source and target rows in one ``X`` with a ``sample_domain`` array (source rows
``>= 0``, target rows ``< 0``, target labels masked). :class:`skot.da.OTNetAdapter` follows that
convention, so it drops into ``skada.make_da_pipeline`` next to skada's own optimal-transport
mappings, and into skada's splitters and scorers.

We use skada's 2-D toy problems (``make_shifted_datasets``): two classes made of Gaussian
blobs, with a target domain that differs by a covariate shift (the inputs move, the labelling
rule does not), a target shift (the class proportions change) or a conditional shift (the
class-conditional distributions move). For each we print the target accuracy of an RBF SVC
with no adaptation, with skot, and with skada's exact, entropic and class-regularised OT
mappings, over several seeds.

Then ``GridSearchCV`` chooses the adapter's parameters (direction and class-aware weight)
with :class:`skot.da.ReverseValidationScorer`, which needs no target label, and we compare its
choice with the best choice in hindsight.

Set ``SKOT_FAST=1`` for a quick run.
"""

# %%
import os
import warnings

import matplotlib

if not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import sklearn
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from skot import OTNetTransport
from skot.da import OTNetAdapter, ReverseValidationScorer

FAST = os.environ.get("SKOT_FAST") == "1"
FIGURE_DIR = os.environ.get("SKOT_FIGURE_DIR", os.path.join("examples", "figures"))
os.makedirs(FIGURE_DIR, exist_ok=True)
SEEDS = [0] if FAST else [0, 1, 2, 3, 4]
N_PER_BLOB = 8 if FAST else 20
SHIFTS = ["covariate_shift", "target_shift", "conditional_shift"]

try:
    # skada switches scikit-learn's metadata routing on when imported: keep that local.
    with sklearn.config_context(enable_metadata_routing=True):
        import skada
        from skada.datasets import make_shifted_datasets
        from skada.model_selection import SourceTargetShuffleSplit
except ImportError:
    skada = None
    print("skada is not installed: this example needs it (pip install skada).")


def make_data(shift, seed):
    X, y, sd = make_shifted_datasets(
        n_samples_source=N_PER_BLOB,
        n_samples_target=N_PER_BLOB,
        shift=shift,
        noise=None,
        label="binary",
        random_state=seed,
    )
    return X, y, sd


# An entropic OT-Net map (soft assignments, epsilon in the solver's standardised units).
ENTROPIC = OTNetTransport(
    height="vector", epsilon=0.1, height_learning_rate=0.03, tol=0.01, max_iter=2000, random_state=0
)


def methods():
    found = {
        "no adaptation": lambda: skada.make_da_pipeline(StandardScaler(), SVC()),
        "skot": lambda: skada.make_da_pipeline(StandardScaler(), OTNetAdapter(), SVC()),
        "skot class-aware": lambda: skada.make_da_pipeline(
            StandardScaler(), OTNetAdapter(label_weight=1.0), SVC()
        ),
        "skot entropic": lambda: skada.make_da_pipeline(
            StandardScaler(), OTNetAdapter(transport=ENTROPIC), SVC()
        ),
        "skada exact OT": lambda: skada.make_da_pipeline(
            StandardScaler(), skada.OTMappingAdapter(), SVC()
        ),
        "skada entropic OT": lambda: skada.make_da_pipeline(
            StandardScaler(), skada.EntropicOTMappingAdapter(reg_e=1.0), SVC()
        ),
        "skada class-reg. OT": lambda: skada.make_da_pipeline(
            StandardScaler(), skada.ClassRegularizerOTMappingAdapter(reg_e=1.0, reg_cl=0.1), SVC()
        ),
    }
    return found


# %%
# Target accuracy on the three shifts
# -----------------------------------
table: dict[tuple[str, str], list[float]] = {}
if skada is not None:
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # skada's own dataset warnings
        for shift in SHIFTS:
            for seed in SEEDS:
                X, y, sd = make_data(shift, seed)
                y_masked = np.where(sd >= 0, y, -1)
                target = sd < 0
                for name, make in methods().items():
                    pipe = make().fit(X, y_masked, sample_domain=sd)
                    accuracy = np.mean(pipe.predict(X[target]) == y[target])
                    table.setdefault((shift, name), []).append(accuracy)

    n_source = int((make_data(SHIFTS[0], 0)[2] >= 0).sum())
    print(f"skada shifted datasets, {n_source} source and target points, {len(SEEDS)} seeds")
    print(f"{'method':22s}" + "".join(f"{s:>22s}" for s in SHIFTS))
    for name in methods():
        cells = [f"{np.mean(table[s, name]):.3f} +- {np.std(table[s, name]):.3f}" for s in SHIFTS]
        print(f"{name:22s}" + "".join(f"{c:>22s}" for c in cells))

# %%
# Choosing the adapter's parameters without target labels
# -------------------------------------------------------
# skada's ``SourceTargetShuffleSplit`` holds out rows of both domains; the scorer trains a
# reverse classifier on the pseudo-labelled target and scores it on the held-out source rows,
# transported. We compare the parameters it picks with the target accuracy of every candidate
# (which needs the target labels, so only an experiment can do it).
grid = {
    "otnetadapter__direction": ["forward"] if FAST else ["forward", "barycentric"],
    "otnetadapter__label_weight": [0.0, 1.0] if FAST else [0.0, 1.0, 3.0],
}
if skada is not None:
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        X, y, sd = make_data("conditional_shift", 0)
        y_masked = np.where(sd >= 0, y, -1)
        target = sd < 0
        pipe = skada.make_da_pipeline(StandardScaler(), OTNetAdapter(), SVC())
        search = GridSearchCV(
            pipe,
            grid,
            cv=SourceTargetShuffleSplit(n_splits=2 if FAST else 3, random_state=0),
            scoring=ReverseValidationScorer(),
        )
        search.fit(X, y_masked, sample_domain=sd)
        print("\nGridSearchCV with ReverseValidationScorer (conditional shift, seed 0)")
        header = ["direction", "label_weight", "reverse score", "target acc."]
        print("".join(f"{h:>14s}" for h in header))
        for params, score in zip(
            search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
        ):
            candidate = sklearn.clone(pipe).set_params(**params)
            candidate.fit(X, y_masked, sample_domain=sd)
            accuracy = np.mean(candidate.predict(X[target]) == y[target])
            print(
                f"{params['otnetadapter__direction']:>14s}"
                f"{params['otnetadapter__label_weight']:14.1f}{score:14.3f}{accuracy:14.3f}"
            )
        chosen = np.mean(search.predict(X[target]) == y[target])
        print(f"chosen: {search.best_params_}, target accuracy {chosen:.3f}")

# %%
# Figure: the transported source on the conditional shift
# -------------------------------------------------------
if skada is not None:
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        X, y, sd = make_data("conditional_shift", 0)
        pipe = skada.make_da_pipeline(StandardScaler(), OTNetAdapter(), SVC())
        pipe.fit(X, np.where(sd >= 0, y, -1), sample_domain=sd)
        scaler = pipe.named_steps["standardscaler"].base_estimator_
        adapter = pipe.named_steps["otnetadapter"].base_estimator_
        Z = scaler.transform(X)
        moved = adapter.X_source_transported_
    source, target = sd >= 0, sd < 0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    ax.scatter(*Z[source].T, c=y[source], cmap="coolwarm", marker="o", s=18, label="source")
    ax.scatter(*Z[target].T, c="0.6", marker="x", s=18, label="target (unlabelled)")
    for a, b in zip(Z[source][::3], moved[::3], strict=True):
        ax.annotate("", b, a, arrowprops={"arrowstyle": "->", "color": "0.4", "lw": 0.6})
    ax.set_title("OT-Net map of the source (every third arrow)")
    ax.legend(loc="best", fontsize=8)
    ax = axes[1]
    names = list(methods())
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        means = [np.mean(table[s, name]) for s in SHIFTS]
        stds = [np.std(table[s, name]) for s in SHIFTS]
        ax.bar(np.arange(len(SHIFTS)) + i * width, means, width, yerr=stds, label=name)
    ax.set_xticks(np.arange(len(SHIFTS)) + 0.4 - width / 2, SHIFTS, fontsize=8)
    ax.set_ylabel("target accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    ax.set_title("Target accuracy (mean +- std over seeds)")
    fig.tight_layout()
else:
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.text(0.5, 0.5, "skada is not installed", ha="center", va="center")
    ax.axis("off")
fig.savefig(os.path.join(FIGURE_DIR, "da_skada.png"), dpi=110)
print("saved", os.path.join(FIGURE_DIR, "da_skada.png"))
