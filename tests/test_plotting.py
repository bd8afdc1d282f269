"""Tests of skot.plotting (matplotlib, Agg backend)."""

import sys

import numpy as np
import pytest

from skot import OTNetTransport

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from skot import plotting  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(600, 2))
    Y = np.array([[-0.6, -0.6], [0.6, -0.6], [0.0, 0.6], [0.0, 0.0]])
    ot = OTNetTransport(height="vector", random_state=0, max_iter=300).fit(X, X_target=Y)
    return ot, X


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_power_cells_colour_the_plane_by_cell(fitted):
    ot, X = fitted
    ax = plotting.plot_power_cells(ot, X, resolution=60, show_borders=False, alpha=1.0)
    images = ax.get_images()
    assert len(images) == 1
    rgba = np.asarray(images[0].get_array())
    # One colour per cell (4 cells, the tab20 palette has distinct colours).
    colours = np.unique(rgba.reshape(-1, rgba.shape[-1]), axis=0)
    assert len(colours) == 4
    # The pixel at the grid point nearest a target has that target's cell colour.
    grid_labels = ot.predict_index(ot.target_)
    assert len(set(grid_labels)) == 4
    assert len(ax.collections) == 2  # samples + targets
    offsets = ax.collections[1].get_offsets()
    np.testing.assert_allclose(offsets, ot.target_)


def test_power_cells_borders_and_extent(fitted):
    ot, _ = fitted
    _, ax = plt.subplots()
    out = plotting.plot_power_cells(ot, ax=ax, extent=(-1, 1, -1, 1), resolution=80)
    assert out is ax
    assert ax.get_xlim() == (-1.0, 1.0)
    rgba = np.asarray(ax.get_images()[0].get_array())
    black = np.all(rgba == (0.0, 0.0, 0.0, 0.9), axis=-1)
    assert 0 < black.mean() < 0.2  # borders are thin lines
    assert len(ax.collections) == 1  # targets only


def test_plot_map_arrows_end_on_target_points(fitted):
    ot, X = fitted
    ax = plotting.plot_map(ot, X, max_arrows=40)
    quiver = [c for c in ax.collections if isinstance(c, matplotlib.quiver.Quiver)]
    assert len(quiver) == 1
    q = quiver[0]
    starts = q.get_offsets()
    ends = starts + np.column_stack([q.U, q.V])
    assert starts.shape == (40, 2)
    # Every arrow ends on one of the target points.
    d = np.linalg.norm(ends[:, None, :] - ot.target_[None], axis=-1).min(axis=1)
    np.testing.assert_allclose(d, 0, atol=1e-6)
    assert ax.get_title() == "Transport map (40 of 600 arrows)"


def test_training_curve_draws_the_marginal_error(fitted):
    ot, _ = fitted
    ax = plotting.plot_training_curve(ot, show_energy=True)
    steps, errors = zip(*ot.marginal_error_curve_, strict=True)
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), steps)
    np.testing.assert_allclose(line.get_ydata(), errors)
    tol_line = ax.get_lines()[1]
    assert tol_line.get_ydata()[0] == pytest.approx(ot.tol)
    energy = ax.right_ax.get_lines()[0]
    assert len(energy.get_ydata()) == len(ot.loss_curve_)


def test_three_dimensional_estimator_is_refused():
    X = np.random.default_rng(0).normal(size=(100, 3))
    ot = OTNetTransport(height="vector", random_state=0, max_iter=5, tol=1.0).fit(X, X_target=X[:5])
    with pytest.raises(ValueError, match="2-D maps only.*3 features"):
        plotting.plot_power_cells(ot)
    with pytest.raises(ValueError, match="2-D maps only"):
        plotting.plot_map(ot, X)


def test_bad_arguments_name_the_argument(fitted):
    ot, X = fitted
    with pytest.raises(ValueError, match="resolution"):
        plotting.plot_power_cells(ot, resolution=1)
    with pytest.raises(ValueError, match="extent"):
        plotting.plot_power_cells(ot, extent=(1, 0, 0, 1))
    with pytest.raises(ValueError, match="X must have 2 columns"):
        plotting.plot_map(ot, X[:, :1])
    with pytest.raises(ValueError, match="max_arrows"):
        plotting.plot_map(ot, X, max_arrows=0)


def test_unfitted_estimator_is_refused():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        plotting.plot_training_curve(OTNetTransport())


def test_missing_matplotlib_names_the_plot_extra(fitted, monkeypatch):
    ot, X = fitted
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"skot\[plot\]"):
        plotting.plot_map(ot, X)
