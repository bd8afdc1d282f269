"""Plots of fitted transport maps: power cells, map arrows and training curves.

matplotlib is an optional dependency (the ``plot`` extra: ``pip install "skot[plot]"``). It is
imported when a function is called, not when this module is imported. Every function takes an
``ax=`` (a new figure is made when it is ``None``) and returns the axes it drew on, the
matplotlib way, so plots compose into subplots.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_array, check_is_fitted

__all__ = ["plot_map", "plot_power_cells", "plot_training_curve"]


def _pyplot():
    """Import ``matplotlib.pyplot`` or fail with a message naming the ``plot`` extra."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised by a test that hides matplotlib
        raise ImportError(
            "skot.plotting needs matplotlib, which is not installed; install it with "
            '`pip install matplotlib` or `pip install "skot[plot]"`.'
        ) from exc
    return plt


def _get_ax(ax):
    if ax is None:
        plt = _pyplot()
        _, ax = plt.subplots()
    else:
        _pyplot()
    return ax


def _check_2d(estimator, what: str) -> None:
    check_is_fitted(estimator)
    n = getattr(estimator, "n_features_in_", None)
    if n != 2:
        raise ValueError(f"{what} draws 2-D maps only; the estimator was fitted on {n} features")


def _as_points(X, name: str) -> np.ndarray:
    X = check_array(X, dtype=np.float64, input_name=name)
    if X.shape[1] != 2:
        raise ValueError(f"{name} must have 2 columns, got shape {X.shape}")
    return X


def _extent(points: list[np.ndarray], margin: float) -> tuple[float, float, float, float]:
    allp = np.vstack(points)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    pad = margin * np.maximum(hi - lo, 1e-12)
    return (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])


def plot_power_cells(
    estimator,
    X=None,
    ax=None,
    *,
    extent: tuple[float, float, float, float] | None = None,
    resolution: int = 400,
    cmap: str = "tab20",
    alpha: float = 0.35,
    show_borders: bool = True,
    show_targets: bool = True,
    sample_kw: dict[str, Any] | None = None,
    target_kw: dict[str, Any] | None = None,
):
    """Draw the power cells of a fitted 2-D map, and the samples coloured by their cell.

    Every point of the plane goes to the target point whose cell contains it:
    ``argmax_j <x, y_j> + h_j``. The cells are convex polygons; the map is constant on each
    and jumps across their borders.

    Parameters
    ----------
    estimator : OTNetTransport
        A fitted estimator with two features (anything with ``predict_index`` and
        ``target_``).
    X : array-like of shape (n_samples, 2), default=None
        Source samples to scatter, each coloured like its cell.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure is created when ``None``.
    extent : tuple of float (xmin, xmax, ymin, ymax), default=None
        Region to draw; by default the box around ``X`` and the target points, plus 5%.
    resolution : int, default=400
        Number of grid points along the longer side of ``extent``.
    cmap : str, default="tab20"
        Qualitative colormap cycled over the cells.
    alpha : float, default=0.35
        Opacity of the cell colours.
    show_borders : bool, default=True
        Draw the cell borders in black.
    show_targets : bool, default=True
        Mark the target points.
    sample_kw, target_kw : dict, default=None
        Extra keyword arguments for the ``scatter`` calls of the samples and targets.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes drawn on.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skot import OTNetTransport
    >>> from skot.plotting import plot_power_cells
    >>> X = np.random.default_rng(0).uniform(-1, 1, size=(500, 2))
    >>> Y = np.array([[-0.5, -0.5], [0.5, -0.5], [0.0, 0.5]])
    >>> ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    >>> ax = plot_power_cells(ot, X, resolution=50)
    >>> len(ax.collections)  # the samples and the targets
    2
    """
    _check_2d(estimator, "plot_power_cells")
    if not (isinstance(resolution, int | np.integer) and resolution >= 2):
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    ax = _get_ax(ax)
    plt = _pyplot()
    Y = np.asarray(estimator.target_, dtype=np.float64)
    pts = [Y]
    if X is not None:
        X = _as_points(X, "X")
        pts.append(X)
    if extent is None:
        extent = _extent(pts, 0.05)
    x0, x1, y0, y1 = (float(v) for v in extent)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(
            f"extent must be (xmin, xmax, ymin, ymax) with xmin < xmax and "
            f"ymin < ymax, got {extent!r}"
        )
    longer = max(x1 - x0, y1 - y0)
    nx = max(2, int(round(resolution * (x1 - x0) / longer)))
    ny = max(2, int(round(resolution * (y1 - y0) / longer)))
    gx, gy = np.meshgrid(np.linspace(x0, x1, nx), np.linspace(y0, y1, ny))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    labels = estimator.predict_index(grid).reshape(ny, nx)
    colormap = plt.get_cmap(cmap)
    n_colors = getattr(colormap, "N", 256)
    n_colors = n_colors if n_colors <= 32 else 20
    palette = colormap(np.arange(n_colors) / max(n_colors - 1, 1))
    image = palette[labels % n_colors].copy()
    image[..., 3] = alpha
    if show_borders:
        border = np.zeros(labels.shape, dtype=bool)
        border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        border[1:, :] |= labels[1:, :] != labels[:-1, :]
        image[border] = (0.0, 0.0, 0.0, 0.9)
    ax.imshow(
        image,
        origin="lower",
        extent=(x0, x1, y0, y1),
        interpolation="nearest",
        aspect="auto",
    )
    if X is not None:
        kw = {"s": 4, "linewidths": 0}
        kw.update(sample_kw or {})
        kw.setdefault("c", palette[estimator.predict_index(X) % n_colors])
        ax.scatter(X[:, 0], X[:, 1], label="source samples", **kw)
    if show_targets:
        kw = {"s": 30, "c": "black", "marker": "x", "linewidths": 1.2}
        kw.update(target_kw or {})
        ax.scatter(Y[:, 0], Y[:, 1], label="target points", **kw)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(f"Power cells ({Y.shape[0]} targets)")
    return ax


def plot_map(
    estimator,
    X,
    ax=None,
    *,
    max_arrows: int = 300,
    random_state: int | None = 0,
    show_source: bool = True,
    show_target: bool = True,
    arrow_kw: dict[str, Any] | None = None,
):
    """Draw the transport map of a fitted 2-D estimator as arrows ``x -> T(x)``.

    Parameters
    ----------
    estimator : OTNetTransport
        A fitted estimator with two features.
    X : array-like of shape (n_samples, 2)
        Source points whose images are drawn.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure is created when ``None``.
    max_arrows : int, default=300
        At most this many arrows, from a random subset of ``X`` (all of ``X`` is still
        scattered).
    random_state : int or None, default=0
        Seed of the subset choice.
    show_source : bool, default=True
        Scatter the points of ``X``.
    show_target : bool, default=True
        Scatter the target points of the estimator.
    arrow_kw : dict, default=None
        Extra keyword arguments for ``ax.quiver``.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes drawn on.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skot import OTNetTransport
    >>> from skot.plotting import plot_map
    >>> X = np.random.default_rng(0).normal(size=(400, 2))
    >>> Y = np.array([[-3.0, 0.0], [3.0, 0.0]])
    >>> ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=Y)
    >>> ax = plot_map(ot, X, max_arrows=50)
    >>> ax.get_title()
    'Transport map (50 of 400 arrows)'
    """
    _check_2d(estimator, "plot_map")
    X = _as_points(X, "X")
    if not (isinstance(max_arrows, int | np.integer) and max_arrows >= 1):
        raise ValueError(f"max_arrows must be a positive integer, got {max_arrows!r}")
    ax = _get_ax(ax)
    TX = np.asarray(estimator.transform(X), dtype=np.float64)
    n = X.shape[0]
    if n > max_arrows:
        idx = np.sort(np.random.default_rng(random_state).choice(n, max_arrows, replace=False))
    else:
        idx = np.arange(n)
    if show_source:
        ax.scatter(X[:, 0], X[:, 1], s=4, c="tab:blue", alpha=0.5, linewidths=0, label="source")
    if show_target:
        Y = np.asarray(estimator.target_)
        ax.scatter(Y[:, 0], Y[:, 1], s=12, c="tab:red", linewidths=0, label="target")
    kw = {"color": "0.25", "alpha": 0.6, "width": 0.003}
    kw.update(arrow_kw or {})
    d = TX[idx] - X[idx]
    ax.quiver(X[idx, 0], X[idx, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, **kw)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"Transport map ({idx.size} of {n} arrows)")
    return ax


def plot_training_curve(estimator, ax=None, *, show_tol: bool = True, show_energy: bool = False):
    """Plot the marginal error of a fitted estimator against the optimisation step.

    The marginal error is the total variation between the masses of the power cells and the
    target weights (``marginal_error_curve_``); training stops once it is under ``tol``.

    Parameters
    ----------
    estimator : OTNetTransport
        A fitted estimator (with ``marginal_error_curve_`` and ``loss_curve_``).
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure is created when ``None``.
    show_tol : bool, default=True
        Draw the tolerance ``estimator.tol`` as a dashed line.
    show_energy : bool, default=False
        Also draw the energy ``loss_curve_`` on a second y axis (its twin axes is
        ``ax.right_ax``).

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes drawn on (the marginal error, log scale).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skot import OTNetTransport
    >>> from skot.plotting import plot_training_curve
    >>> X = np.random.default_rng(0).normal(size=(400, 2))
    >>> ot = OTNetTransport(height="vector", random_state=0).fit(X, X_target=X[:20])
    >>> ax = plot_training_curve(ot)
    >>> ax.get_ylabel()
    'marginal error (total variation)'
    """
    check_is_fitted(estimator)
    curve = getattr(estimator, "marginal_error_curve_", None)
    if not curve:
        raise ValueError("the estimator has no marginal_error_curve_ to plot (empty or absent)")
    ax = _get_ax(ax)
    steps, errors = (np.asarray(v, dtype=float) for v in zip(*curve, strict=True))
    ax.plot(steps, errors, marker="o", markersize=3, color="tab:blue", label="marginal error")
    if show_tol and getattr(estimator, "tol", 0) > 0:
        ax.axhline(
            estimator.tol,
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label=f"tol = {estimator.tol:g}",
        )
    if np.all(errors > 0):
        ax.set_yscale("log")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("marginal error (total variation)")
    if show_energy:
        losses = np.asarray(getattr(estimator, "loss_curve_", []), dtype=float)
        right = ax.twinx()
        right.plot(
            np.arange(1, losses.size + 1),
            losses,
            color="tab:green",
            linewidth=1,
            alpha=0.8,
            label="energy",
        )
        right.set_ylabel("energy E(h)")
        ax.right_ax = right
    ax.legend(loc="upper right")
    ax.set_title("Training curve")
    return ax
