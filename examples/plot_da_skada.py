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

On the covariate and target shifts no adaptation is right (the labelling rule, or each
class's distribution, is the same in both domains) and every map can only lose. So the last
row lets ``GridSearchCV`` decide, per dataset and without any target label, how much to adapt:
``OTNetAdapter(strength=...)`` moves each source row ``x`` to ``x + strength * (T(x) - x)``
(``strength=0``: no adaptation at all), and the search picks among no adaptation, the full
map with the source's class proportions and the full map with estimated proportions, scored by
:class:`skot.da.ReverseValidationScorer` on skada's ``SourceTargetShuffleSplit``. We print the
target accuracy of the chosen pipeline and what it chose.

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
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, ParameterGrid
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


# The label-free choice between no adaptation and the full map (candidates in this order; a
# tie goes to the first). ``SKOT_FULL_GRID=1`` searches a larger grid, strength in
# {0, 0.5, 1} x class proportions {source, estimated}: about 2.5 times the run time (the
# scorer ranks intermediate strengths poorly; see the user guide).
FULL_GRID = os.environ.get("SKOT_FULL_GRID") == "1"
GRID = [{"otnetadapter__strength": [0.0, 1.0]}]
if FULL_GRID:
    GRID = [
        {"otnetadapter__strength": [0.0]},
        {"otnetadapter__strength": [0.5, 1.0]},
        {
            "otnetadapter__strength": [0.5, 1.0],
            **{f"otnetadapter__{k}": [v] for k, v in ESTIMATED.items()},
        },
    ]
SELECTED = "skot, label-free selection"


def describe(params):
    """Short name of a candidate of ``GRID``."""
    strength = params["otnetadapter__strength"]
    if strength == 0:
        return "none"
    name = "full" if strength == 1 else f"{strength:g}"
    return name + ("/est" if "otnetadapter__class_proportions" in params else "")


def select(X, y_masked, sd):
    """Grid search over ``GRID`` with the reverse-validation scorer (no target label)."""
    search = GridSearchCV(
        skada.make_da_pipeline(StandardScaler(), OTNetAdapter(), SVC()),
        GRID,
        cv=SourceTargetShuffleSplit(n_splits=2 if FAST else 3, random_state=0),
        scoring=ReverseValidationScorer(),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        search.fit(X, y_masked, sample_domain=sd)
    # Count the fold fits that stopped short of the solver's tolerance; show anything else.
    n_warned = 0
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            n_warned += 1
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return search, n_warned


# %%
# Target accuracy on the three shifts
# -----------------------------------
table: dict[tuple[str, str], list[float]] = {}
choices: dict[str, list[str]] = {}  # what the label-free selection chose, per seed
unconverged = 0  # fold fits that stopped short of the solver's tolerance, during the search
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
                search, n_warned = select(X, y_masked, sd)
                unconverged += n_warned
                accuracy = np.mean(search.predict(X[target]) == y[target])
                table.setdefault((shift, SELECTED), []).append(accuracy)
                choices.setdefault(shift, []).append(describe(search.best_params_))

    n_source = int((make_data(SHIFTS[0], 0)[2] >= 0).sum())
    print(f"skada shifted datasets, {n_source} source and target points, {len(SEEDS)} seeds")
    print(f"{'method':28s}" + "".join(f"{s:>22s}" for s in SHIFTS))
    for name in [*methods(), SELECTED]:
        cells = [f"{np.mean(table[s, name]):.3f} +- {np.std(table[s, name]):.3f}" for s in SHIFTS]
        print(f"{name:28s}" + "".join(f"{c:>22s}" for c in cells))
    print(f"{'class 1 share, true':28s}" + "".join(f"{np.mean(truth[s]):22.3f}" for s in SHIFTS))
    print(
        f"{'class 1 share, est.':28s}"
        + "".join(f"{np.mean(estimates[s]):14.3f} +- {np.std(estimates[s]):.3f}" for s in SHIFTS)
    )
    grid = ", ".join(describe(p) for p in ParameterGrid(GRID))
    print(f"\n{SELECTED}: candidates {grid}; chosen per seed")
    for shift in SHIFTS:
        print(f"  {shift:19s}{' '.join(f'{c:>8s}' for c in choices[shift])}")
    print(f"  (search fold fits short of the solver's tolerance: {unconverged})")
    print("\nTarget accuracy per seed")
    for name in ["skot", "skada exact OT", SELECTED]:
        for shift in SHIFTS:
            per_seed = " ".join(f"{a:.4f}" for a in table[shift, name])
            print(f"  {name:28s}{shift:19s}{per_seed}")

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
    names = [*methods(), SELECTED]
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
