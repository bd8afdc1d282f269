"""Target class proportions under a target shift: the estimate of JCPOT.

Used by ``OTNetAdapter(class_proportions="estimate")``. The user guide
(``docs/domain_adaptation.rst``, "Class proportions") gives its measured behaviour.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .. import _discrete
from .._discrete import exact_plan, squared_distances
from ._defaults import _default_transport, exact_by_default

__all__: list[str] = []


def _estimate_proportions(
    Xs: np.ndarray,
    codes: np.ndarray,
    Xt: np.ndarray,
    n_classes: int,
    *,
    n_rounds: int = 40,
    steps_per_round: int = 30,
    step_size: float = 1.0,
) -> np.ndarray:
    """Class proportions of the target: the mixture of source classes closest to it.

    Minimises over the class proportions ``pi`` (and a location-scale map ``x -> s x + t``
    of the source) the transport cost between the source, its class ``k`` reweighted to total
    mass ``pi_k``, and the target. This is the estimate of JCPOT (Redko et al., 2019) with the
    location-scale conditional shift of Zhang et al. (2013): without ``s, t``, any shift of
    the whole target is mistaken for a change of class proportions.

    The transport runs from the target samples (moved by the inverse of ``s, t``) onto the
    source points: their exact coupling when POT is installed, else the semi-discrete
    transport warm-started between rounds. The derivative of the transport cost with
    respect to the weight of source point ``i`` is its dual potential
    ``|x_i|^2 / 2 + heights_i``; the proportions take an exponentiated-gradient step on the
    class means of it (normalised to a largest log-change of ``step_size / sqrt(1 + round)``),
    ``s, t`` are refitted by weighted least squares to the points' images (cell barycentres),
    and the estimate is the mean of the proportions over the second half of the rounds.
    ``steps_per_round`` solver steps per round keep the heights up with the weights.

    Parameters
    ----------
    Xs : ndarray of shape (n_source, n_features)
        Source rows.
    codes : ndarray of shape (n_source,)
        Their classes, encoded as ``0 .. n_classes - 1``.
    Xt : ndarray of shape (n_target, n_features)
        Target rows.
    n_classes : int
        Number of classes.
    n_rounds, steps_per_round, step_size
        The schedule described above.

    Returns
    -------
    pi : ndarray of shape (n_classes,)
        Estimated target proportions, summing to one.
    """
    n_k = np.bincount(codes, minlength=n_classes).astype(np.float64)
    present = n_k > 0
    pi = n_k / n_k.sum()
    mean_s, mean_t = Xs.mean(axis=0), Xt.mean(axis=0)
    spread_s = float(np.sqrt(((Xs - mean_s) ** 2).sum(axis=1).mean())) or 1.0
    spread_t = float(np.sqrt(((Xt - mean_t) ** 2).sum(axis=1).mean())) or 1.0
    scale, shift = spread_t / spread_s, mean_t - spread_t / spread_s * mean_s
    transport = None
    exact = _discrete.has_pot() and exact_by_default(Xs.shape[0], Xt.shape[0], Xs.shape[1])
    history = []
    for rnd in range(n_rounds):
        nu = pi[codes] / n_k[codes]
        samples = (Xt - shift) / scale
        if exact:
            # The exact coupling of the target samples with the weighted source points: its
            # column duals v are the potentials (|x|^2 / 2 + h = v / 2 for the cost |x - y|^2).
            plan, _, v, _ = exact_plan(
                squared_distances(samples, Xs),
                np.full(samples.shape[0], 1 / samples.shape[0]),
                nu / nu.sum(),
            )
            potential = 0.5 * v
            mass = plan.sum(axis=0)
            barycenters = np.where(
                mass[:, None] > 0, plan.T @ samples / np.maximum(mass, 1e-300)[:, None], Xs
            )
        else:
            if transport is None:
                transport = _default_transport(samples, Xs, weights=("targets", nu))
                # Rough heights suffice: the proportions move anyway.
                transport.set_params(random_state=0, max_iter=5 * steps_per_round)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                transport.fit(samples, X_target=Xs, target_weight=nu)
            transport.set_params(warm_start=True, max_iter=steps_per_round)
            # Identical source rows are merged into one target point: index them back.
            rows = transport._nearest_target(Xs)
            potential = 0.5 * (Xs**2).sum(axis=1) + transport.heights_[rows]
            barycenters = np.asarray(transport.barycenters_, dtype=np.float64)[rows]
        gradient = np.bincount(codes, weights=potential, minlength=n_classes)[present]
        gradient = gradient / n_k[present]
        centred = gradient - gradient.mean()
        step = np.exp(-step_size / np.sqrt(1 + rnd) * centred / max(np.abs(centred).max(), 1e-12))
        pi[present] = np.maximum(pi[present] * step, 1e-3)
        pi /= pi.sum()
        history.append(pi.copy())
        # Location-scale refit: regress the images s * b_i + t of the source points on them.
        images = scale * barycenters + shift
        w = nu / nu.sum()
        xm, zm = w @ Xs, w @ images
        var = float(w @ ((Xs - xm) ** 2).sum(axis=1))
        if var > 0:
            scale = max(float(w @ ((Xs - xm) * (images - zm)).sum(axis=1)) / var, 1e-3)
            shift = zm - scale * xm
    estimate = np.mean(history[len(history) // 2 :], axis=0)
    return estimate / estimate.sum()
