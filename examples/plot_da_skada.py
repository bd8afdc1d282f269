"""
OT-Net in skada pipelines, and choosing its parameters without target labels
============================================================================

skada stacks source and target rows in one ``X`` with a ``sample_domain`` array (source rows
``>= 0``, target rows ``< 0``, target labels masked). :class:`skot.da.OTNetAdapter` follows that
convention, so it drops into ``skada.make_da_pipeline`` next to skada's own optimal-transport
mappings, and into skada's splitters and scorers.

We use skada's 2-D toy problems (``make_shifted_datasets``): two classes made of Gaussian
blobs, with a target domain that differs by a covariate shift (the inputs move, the labelling
rule does not), a target shift (the class proportions change: half and half in the source,
90% and 10% in the target) or a conditional shift (the class-conditional distributions move).
For each we print the target accuracy of an RBF SVC with no adaptation, with skot, and with
skada's exact, entropic and class-regularised OT mappings, over several seeds.

Every one of skada's mappings, and skot's default, gives every source row the same weight,
so it assumes that the target has the source's class proportions. Under the target shift an
equal-weight map must then send 40% of the mass from one class into the other's region.
``OTNetAdapter(class_proportions="estimate")`` first estimates the target's class proportions
(the class reweighting of the source closest to the target in transport cost, allowing for a
location-scale shift of the whole target) and transports the reweighted source.

Then ``GridSearchCV`` chooses the adapter's class proportions (source or estimated) on the
target shift with :class:`skot.da.ReverseValidationScorer`, which needs no target label,
and we compare its choice with the best choice in hindsight.

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


# Estimated target class proportions, source rows weighted accordingly (barycentric images).
ESTIMATED = {"class_proportions": "estimate", "direction": "barycentric"}


def methods():
    found = {
        "no adaptation": lambda: skada.make_da_pipeline(StandardScaler(), SVC()),
        "skot": lambda: skada.make_da_pipeline(StandardScaler(), OTNetAdapter(), SVC()),
        "skot class-aware": lambda: skada.make_da_pipeline(
            StandardScaler(), OTNetAdapter(label_weight=1.0), SVC()
        ),
        "skot est. proportions": lambda: skada.make_da_pipeline(
            StandardScaler(), OTNetAdapter(**ESTIMATED), SVC()
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
estimates: dict[str, list[float]] = {}  # estimated share of class 1 in the target
truth: dict[str, list[float]] = {}
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
                    if name == "skot est. proportions":
                        adapter = pipe.named_steps["otnetadapter"].base_estimator_
                        estimates.setdefault(shift, []).append(adapter.class_proportions_[1])
                        truth.setdefault(shift, []).append(np.mean(y[target] == 1))

    n_source = int((make_data(SHIFTS[0], 0)[2] >= 0).sum())
    print(f"skada shifted datasets, {n_source} source and target points, {len(SEEDS)} seeds")
    print(f"{'method':22s}" + "".join(f"{s:>22s}" for s in SHIFTS))
    for name in methods():
        cells = [f"{np.mean(table[s, name]):.3f} +- {np.std(table[s, name]):.3f}" for s in SHIFTS]
        print(f"{name:22s}" + "".join(f"{c:>22s}" for c in cells))
    print(f"{'class 1 share, true':22s}" + "".join(f"{np.mean(truth[s]):22.3f}" for s in SHIFTS))
    print(
        f"{'class 1 share, est.':22s}"
        + "".join(f"{np.mean(estimates[s]):14.3f} +- {np.std(estimates[s]):.3f}" for s in SHIFTS)
    )

# %%
# Choosing the adapter's parameters without target labels
# -------------------------------------------------------
# skada's ``SourceTargetShuffleSplit`` holds out rows of both domains; the scorer trains a
# reverse classifier on the pseudo-labelled target and scores it on the held-out source rows,
# transported. We compare the parameters it picks with the target accuracy of every candidate
# (which needs the target labels, so only an experiment can do it).
grid = {"otnetadapter__class_proportions": ["source", "estimate"]}
if skada is not None:
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        X, y, sd = make_data("target_shift", 0)
        y_masked = np.where(sd >= 0, y, -1)
        target = sd < 0
        pipe = skada.make_da_pipeline(
            StandardScaler(), OTNetAdapter(direction="barycentric"), SVC()
        )
        search = GridSearchCV(
            pipe,
            grid,
            cv=SourceTargetShuffleSplit(n_splits=2 if FAST else 3, random_state=0),
            scoring=ReverseValidationScorer(),
        )
        search.fit(X, y_masked, sample_domain=sd)
        print("\nGridSearchCV with ReverseValidationScorer (target shift, seed 0)")
        header = ["proportions", "reverse score", "target acc."]
        print("".join(f"{h:>14s}" for h in header))
        for params, score in zip(
            search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
        ):
            candidate = sklearn.clone(pipe).set_params(**params)
            candidate.fit(X, y_masked, sample_domain=sd)
            accuracy = np.mean(candidate.predict(X[target]) == y[target])
            print(f"{params['otnetadapter__class_proportions']:>14s}{score:14.3f}{accuracy:14.3f}")
        chosen = np.mean(search.predict(X[target]) == y[target])
        print(f"chosen: {search.best_params_}, target accuracy {chosen:.3f}")

# %%
# Figure: the transported source on the target shift, and the accuracies
# -----------------------------------------------------------------------
# Left, skot's default map: equal weights push part of the source's class 1 (red) onto
# target points of class 0. Middle, with estimated class proportions: each class stays on its
# own region. Arrows go from a source point to its image (every second source point).
if skada is not None:
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        X, y, sd = make_data("target_shift", 0)
        maps = {}
        for title, params in [("skot default", {}), ("skot est. proportions", ESTIMATED)]:
            pipe = skada.make_da_pipeline(StandardScaler(), OTNetAdapter(**params), SVC())
            pipe.fit(X, np.where(sd >= 0, y, -1), sample_domain=sd)
            scaler = pipe.named_steps["standardscaler"].base_estimator_
            adapter = pipe.named_steps["otnetadapter"].base_estimator_
            maps[title] = (scaler.transform(X), adapter.X_source_transported_)
    source, target = sd >= 0, sd < 0
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for ax, (title, (Z, moved)) in zip(axes[:2], maps.items(), strict=True):
        ax.scatter(*Z[target].T, c="0.75", marker="x", s=18, label="target (unlabelled)")
        ax.scatter(*Z[source].T, c=y[source], cmap="coolwarm", marker="o", s=14, label="source")
        # Class of the target point nearest to each image (the target labels are known here).
        nearest = ((moved[:, None, :] - Z[target][None, :, :]) ** 2).sum(axis=-1).argmin(axis=1)
        crossed = np.mean(y[target][nearest] != y[source])
        for a, b in zip(Z[source][::2], moved[::2], strict=True):
            ax.annotate("", b, a, arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 0.5})
        ax.set_title(
            f"Target shift, {title}:\n{crossed:.0%} of the source lands on the other class",
            fontsize=10,
        )
        ax.legend(loc="lower left", fontsize=7)
    ax = axes[2]
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
    ax.set_title(f"Target accuracy (mean +- std over {len(SEEDS)} seeds)", fontsize=10)
    fig.tight_layout()
else:
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.text(0.5, 0.5, "skada is not installed", ha="center", va="center")
    ax.axis("off")
fig.savefig(os.path.join(FIGURE_DIR, "da_skada.png"), dpi=110)
print("saved", os.path.join(FIGURE_DIR, "da_skada.png"))
