"""Exact discrete optimal transport between two finite samples, and its power diagram.

When both sides are finite samples, the optimal coupling is a linear programme that the
ecosystem's exact solvers handle at domain-adaptation sizes faster than any semi-discrete
iteration: POT's network simplex (``ot.emd``, when POT is installed), otherwise SciPy's
``linear_sum_assignment`` (equal sizes, uniform weights).

The target-side duals ``v`` of the coupling are the semi-discrete heights: with the cost
``|x - y|^2``, ``argmin_j |x - y_j|^2 - v_j = argmax_j <x, y_j> + (v_j - |y_j|^2) / 2``.
An exact solver returns duals on the boundary of the optimal face (a source row ties with
other targets), so :func:`strict_duals` moves them inside it by a small margin, and
:func:`transport_from_duals` turns them into a fitted :class:`~skot.OTNetTransport` whose
hard map sends every training row to its coupled target and maps new rows by the same power
diagram.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from sklearn.exceptions import ConvergenceWarning

__all__ = [
    "exact_plan",
    "has_pot",
    "rounded",
    "squared_distances",
    "strict_duals",
    "transport_from_duals",
]

#: Largest ``n * m`` of a dense cost matrix (float64: 3.2 GB).
MAX_ENTRIES = 4 * 10**8
_CHUNK = 2**22


def has_pot() -> bool:
    """Whether POT (``ot``) can be imported."""
    try:
        import ot  # noqa: F401
    except ImportError:
        return False
    return True


def squared_distances(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Dense ``|x_i - y_j|^2`` in float64 (clipped at 0), row chunk by row chunk."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    y2 = np.einsum("ij,ij->i", Y, Y)
    C = np.empty((X.shape[0], Y.shape[0]))
    rows = max(1, _CHUNK // max(Y.shape[0], 1))
    for r0 in range(0, X.shape[0], rows):
        Xc = X[r0 : r0 + rows]
        block = np.einsum("ij,ij->i", Xc, Xc)[:, None] + y2[None, :] - 2.0 * (Xc @ Y.T)
        C[r0 : r0 + rows] = np.maximum(block, 0.0)
    return C


def _uniform(w: np.ndarray) -> bool:
    return bool(np.all(w == w[0]))


def exact_plan(C: np.ndarray, a: np.ndarray, b: np.ndarray, *, method: str = "auto"):
    """Optimal coupling of the weights ``a`` (rows) and ``b`` (columns) for the cost ``C``.

    Parameters
    ----------
    C : ndarray of shape (n, m)
        Cost matrix.
    a, b : ndarray of shape (n,) and (m,)
        Weights, each summing to one.
    method : {"auto", "pot", "assignment"}
        ``"auto"``: POT's ``ot.emd`` when POT is installed, else ``"assignment"`` (SciPy's
        ``linear_sum_assignment``) when ``n == m`` with uniform weights, else no solver
        (``None`` is returned).

    Returns
    -------
    plan : ndarray of shape (n, m) or None
        The coupling (``None`` when no exact solver applies).
    u, v : ndarray of shape (n,) and (m,), or None
        Row and column duals: ``u_i + v_j <= C_ij``, with equality where ``plan > 0``.
    method : str
        The solver used.
    """
    n, m = C.shape
    if method == "auto":
        if has_pot():
            method = "pot"
        elif n == m and _uniform(a) and _uniform(b):
            method = "assignment"
        else:
            return None, None, None, "none"
    if method == "pot":
        import ot

        plan, log = ot.emd(a, b, C, numItermax=max(10**6, 50 * n * m), log=True)
        if log.get("warning"):
            warnings.warn(f"ot.emd: {log['warning']}", RuntimeWarning, stacklevel=2)
        u = np.asarray(log["u"], dtype=np.float64)
        v = np.asarray(log["v"], dtype=np.float64)
        shift = v.mean()
        return np.asarray(plan), u + shift, v - shift, method
    if method == "assignment":
        rows, cols = linear_sum_assignment(C)
        plan = np.zeros((n, m))
        plan[rows, cols] = 1.0 / n
        sigma = np.empty(n, dtype=np.intp)
        sigma[rows] = cols
        v = _assignment_duals(C, sigma)
        u = np.empty(n)
        u[rows] = C[rows, cols] - v[cols]
        return plan, u, v, method
    raise ValueError(f"unknown method {method!r}")


def _assignment_duals(C: np.ndarray, sigma: np.ndarray, max_rounds: int = 10_000) -> np.ndarray:
    """Column duals of the optimal assignment ``sigma`` (row ``i`` to column ``sigma[i]``).

    The largest ``v`` with ``v_k <= v_sigma(i) + C_ik - C_i,sigma(i)`` (difference
    constraints, free of negative cycles because ``sigma`` is optimal), by Bellman-Ford
    rounds from ``v = 0``, row chunk by row chunk.
    """
    n, m = C.shape
    own = C[np.arange(n), sigma]
    v = np.zeros(m)
    rows = max(1, _CHUNK // max(m, 1))
    for _ in range(max_rounds):
        base = v[sigma] - own
        new = v.copy()
        for r0 in range(0, n, rows):
            block = C[r0 : r0 + rows] + base[r0 : r0 + rows, None]
            np.minimum(new, block.min(axis=0), out=new)
        if np.array_equal(new, v):
            break
        v = new
    return v - v.mean()


def _close_pairs(C, sigma, v, limit):
    """The pairs ``(i, k)``, ``k != sigma(i)``, whose slack ``C_ik - v_k - (C_i,sigma(i) -
    v_sigma(i))`` is below ``limit``, and those slacks (one pass, row chunk by row chunk)."""
    n, m = C.shape
    base = C[np.arange(n), sigma] - v[sigma]
    rows = max(1, _CHUNK // max(m, 1))
    ii, kk, ss = [], [], []
    for r0 in range(0, n, rows):
        slack = C[r0 : r0 + rows] - v[None, :] - base[r0 : r0 + rows, None]
        slack[np.arange(slack.shape[0]), sigma[r0 : r0 + rows]] = np.inf
        i, k = np.nonzero(slack < limit)
        ii.append(i + r0)
        kk.append(k)
        ss.append(slack[i, k])
    return np.concatenate(ii), np.concatenate(kk), np.concatenate(ss)


#: Rounds of :func:`strict_duals` between two checks of its parent graph for a cycle.
_CYCLE_CHECK = 8


def _parent_cycle(parent: np.ndarray) -> bool:
    """Whether the functional graph ``k -> parent[k]`` has a cycle (``-1``: no parent).

    Pointer jumping: ``-1`` becomes a sink that is its own parent, and squaring the map
    ``ceil(log2(m + 1))`` times sends every node that is on no cycle (nor leads into one) to
    the sink.
    """
    m = parent.size
    jump = np.append(np.where(parent < 0, m, parent), m)
    for _ in range(max(1, int(m).bit_length())):
        jump = jump[jump]
    return bool((jump[:m] != m).any())


def strict_duals(
    C: np.ndarray, sigma: np.ndarray, v: np.ndarray, *, max_rounds: int = 2048
) -> tuple[np.ndarray, float]:
    """Column duals under which every row ``i`` strictly prefers its column ``sigma[i]``.

    Starting from duals ``v`` under which ``sigma`` is optimal (``C_i,sigma(i) - v_sigma(i)
    <= C_ik - v_k``), lowers ``v`` by Bellman-Ford rounds until ``C_ik - v_k >=
    C_i,sigma(i) - v_sigma(i) + margin`` for every ``k != sigma(i)``, with the largest margin
    ``mean(C) * 10**-k``, ``k = 3..7``, that settles within ``max_rounds`` rounds. A margin
    above the smallest mean slack of a cycle of near-ties cannot hold (a negative cycle of
    the difference constraints: the rounds never settle); neither can any where ``sigma``
    rounds a fractional coupling. The rounds run on the pairs close to a tie; a full pass
    then checks every pair, and any that the lowered duals violate joins the rounds.

    Each round lowers a column only where its bound is strictly lower, and records as its
    parent the column of an edge that achieves the bound. Every ``_CYCLE_CHECK`` rounds the
    parent graph is checked for a cycle (:func:`_parent_cycle`): with strict decreases, a
    cycle of parents is a negative cycle (the walk-to-root argument of Bellman-Ford), so the
    margin cannot hold and the next smaller one is tried at once instead of after
    ``max_rounds`` rounds.

    Returns
    -------
    v : ndarray of shape (m,)
        The lowered duals (``v`` itself when no margin settles).
    margin : float
        The margin reached (``0.0`` when none settles).
    """
    v = np.asarray(v, dtype=np.float64)
    n = C.shape[0]
    scale = float(C.mean()) or 1.0
    margins = scale * 10.0 ** -np.arange(3, 8)
    # One pass collects the pairs near a tie for the largest margin (or the largest margin
    # whose pairs stay few); smaller margins take a subset.
    all_ii, all_kk, all_slack = _close_pairs(C, sigma, v, 16 * margins[0])
    while all_ii.size > 64 * n and margins.size > 1:
        margins = margins[1:]
        keep = all_slack < 16 * margins[0]
        all_ii, all_kk, all_slack = all_ii[keep], all_kk[keep], all_slack[keep]
    for margin in margins:
        keep = all_slack < 16 * margin
        ii, kk, slack = all_ii[keep], all_kk[keep], all_slack[keep]
        low = v.copy()
        parent = np.full(v.size, -1, dtype=np.intp)  # -1: the source (the starting v)
        for _ in range(4):  # extensions by the pairs the full pass finds violated
            order = np.argsort(kk, kind="stable")
            ii, kk, slack = ii[order], kk[order], slack[order]
            weight = slack + v[kk] - v[sigma[ii]] - margin  # v_k <= v_sigma(i) + weight
            heads = np.flatnonzero(np.r_[True, kk[1:] != kk[:-1]]) if kk.size else kk
            cols, from_col = kk[heads], sigma[ii]
            seg = np.repeat(np.arange(heads.size), np.diff(np.r_[heads, kk.size]))
            settled, cycle = ii.size == 0, False
            for r in range(max_rounds):
                if settled or cycle:
                    break
                through = low[from_col] + weight
                bound = np.minimum.reduceat(through, heads)
                lower = bound < low[cols]
                if not lower.any():
                    settled = True
                    break
                # Strict decreases only; each lowered column's parent is an edge achieving
                # its minimum (any one).
                low[cols[lower]] = bound[lower]
                tight = lower[seg] & (through == bound[seg])
                parent[kk[tight]] = from_col[tight]
                if r % _CYCLE_CHECK == _CYCLE_CHECK - 1:
                    cycle = _parent_cycle(parent)
            if not settled:
                break
            i2, k2, _ = _close_pairs(C, sigma, low, margin * (1 - 1e-9))
            if i2.size == 0:
                return low, float(margin)
            fresh = C[i2, k2] - v[k2] - (C[i2, sigma[i2]] - v[sigma[i2]])
            ii, kk = np.concatenate([ii, i2]), np.concatenate([kk, k2])
            slack = np.concatenate([slack, fresh])
    return v.copy(), 0.0


def rounded(plan: np.ndarray) -> np.ndarray:
    """Each row's column of largest coupling."""
    return np.asarray(plan.argmax(axis=1)).ravel()


def transport_from_duals(
    X: np.ndarray,
    Y: np.ndarray,
    v: np.ndarray,
    *,
    sample_weight=None,
    target_weight=None,
    tol: float = 1e-2,
    polish: bool = False,
):
    """A fitted :class:`~skot.OTNetTransport` (free heights) of ``X`` onto ``Y`` whose heights
    come from the column duals ``v`` of an exact coupling for the cost ``|x - y|^2``.

    The estimator is fitted with no step at the heights ``(v_j - |y_j|^2) / 2``: its fitted
    attributes, ``marginal_error_`` and ``converged_`` among them, are those of the power
    diagram the duals define (one pass over ``X``). With ``polish``, a diagram that misses
    ``tol`` (float32 scores cannot hold the duals of a large assignment in low dimension)
    takes up to :data:`POLISH_STEPS` Newton steps from them.
    """
    from ._cells import nearest_rows
    from ._transport import OTNetTransport

    Y = np.asarray(Y, dtype=np.float64)
    heights = 0.5 * (np.asarray(v, dtype=np.float64) - np.einsum("ij,ij->i", Y, Y))

    def heights_of(target):  # identical or zero-weight points may have been dropped
        return heights if target.shape[0] == Y.shape[0] else heights[nearest_rows(target, Y)]

    transport = OTNetTransport(height="vector", init="voronoi", tol=tol, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        transport._fit_at_heights(X, Y, heights_of, sample_weight, target_weight)
    if polish and not transport.converged_:
        # The duals do not hold in float32 (near ties at many rows): Newton steps from them
        # finish a power diagram within tol of the marginals (a few steps: they are optimal).
        transport.set_params(solver="newton", max_iter=POLISH_STEPS, warm_start=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            transport.fit(X, X_target=Y, sample_weight=sample_weight, target_weight=target_weight)
        transport.set_params(warm_start=False)
    return transport


#: Newton steps of :func:`transport_from_duals` from duals that float32 cannot hold.
POLISH_STEPS = 100

#: Kernel entries ``exp(-R / reg)`` with ``R >= _KERNEL_CUTOFF * reg`` (below 2e-22 of their
#: row's and column's largest) are dropped when fewer than ``_SPARSE_DENSITY`` of them remain.
_KERNEL_CUTOFF = 50.0
_SPARSE_DENSITY = 0.1


def entropic_plan(
    C: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    reg: float,
    u: np.ndarray,
    v: np.ndarray,
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
) -> np.ndarray:
    """Entropic coupling ``argmin <P, C> - reg * H(P)`` with marginals ``a``, ``b``, by
    Sinkhorn's scaling iterations on the kernel ``exp(-(C_ij - u_i - v_j) / reg)``.

    ``u``, ``v`` are exact duals of the same cost (``u_i + v_j <= C_ij``, tight on the exact
    coupling's support): the reduced cost is non-negative and zero somewhere in every row and
    column, so the kernel never underflows to a zero row or column, whatever ``reg``
    (the stabilisation by absorbed potentials). Stops when the total variation of the row
    marginals to ``a`` is at most ``tol`` (the column marginals are exact after every
    iteration).
    """
    # Shift the reduced cost so that every row, then every column, has a zero (a change of
    # ``u`` and ``v`` that leaves the plan unchanged): rounding errors of the duals (1e-9 on a
    # cost of 1e3) would otherwise empty whole rows of the kernel at a small ``reg``.
    R = C - u[:, None]
    R -= v[None, :]
    np.maximum(R, 0.0, out=R)
    R -= R.min(axis=1, keepdims=True)
    R -= R.min(axis=0, keepdims=True)
    keep = R < _KERNEL_CUTOFF * reg
    if np.count_nonzero(keep) < _SPARSE_DENSITY * keep.size:
        # Most of the kernel below exp(-_KERNEL_CUTOFF) of every row's and column's largest
        # entry (low dimension, a small reg): the iterations then cost the kept entries only.
        rows, cols = np.nonzero(keep)
        K = sparse.csr_matrix((np.exp(-R[rows, cols] / reg), (rows, cols)), shape=R.shape)
        KT = K.T.tocsr()
    else:
        del keep
        K = np.exp(np.multiply(R, -1.0 / reg, out=R), out=R)
        KT = K.T
    # Never None: the kernel keeps the exact coupling's support (its reduced cost is 0).
    r, c = sinkhorn_scalings(K, a, b, max_iter=max_iter, tol=tol, KT=KT)
    if sparse.issparse(K):
        return K.multiply(r[:, None]).multiply(c[None, :]).toarray()
    K *= r[:, None]
    K *= c[None, :]
    return K


def sinkhorn_scalings(K, a, b, *, max_iter: int = 1000, tol: float = 1e-4, KT=None):
    """Scalings ``r``, ``c`` of the kernel ``K`` (dense or sparse, no empty row or column)
    such that ``diag(r) K diag(c)`` has column sums ``b`` and row sums within ``tol`` (total
    variation) of ``a``: Sinkhorn's iterations, at most ``max_iter``. ``KT``: ``K``'s
    transpose, if already built (a CSR copy is faster to multiply than a view).

    A sparse ``K`` whose support admits no coupling with these sums (rows that together reach
    too little of some columns' mass) drives the scalings to zero and infinity: then ``None``
    is returned, with no warning."""
    KT = K.T if KT is None else KT
    r = np.ones_like(a)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for _ in range(max_iter):
            c = b / (KT @ r)
            Kc = K @ c
            if 0.5 * np.abs(r * Kc - a).sum() <= tol:
                break
            r = a / Kc
    if not (np.isfinite(r).all() and np.isfinite(c).all()):
        return None
    return r, c
