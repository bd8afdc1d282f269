"""Height parameterisations of the Brenier potential ``u(x) = max_j <x, y_j> + h_j``.

Pure torch, no scikit-learn. Every model maps target points ``Y`` (already normalised by the
solver) to heights ``h``. All three include the offset ``-|y|^2 / 2``: with a zero correction the
power diagram is the Voronoi diagram of the targets (the nearest-target map), a far better start
than equal heights, and the trainable part only learns the dual potential's correction.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._distributed import LOCAL, LocalGroup
from ._kernels import default_block_elements

__all__ = [
    "HEIGHT_KINDS",
    "HeightModel",
    "NetworkHeights",
    "ResidualHeights",
    "VectorHeights",
    "make_height_model",
    "gaussian_offset",
    "initial_height_model",
    "typical_spacing",
]

HEIGHT_KINDS = ("vector", "network", "residual")


def _cached(owner: nn.Module, name: str, inputs: list[Tensor], compute):
    """``compute(inputs[0])``, kept on ``owner`` as ``name`` while every tensor of ``inputs``
    is the same object at the same version.

    In-place changes bump a tensor's version and drop the value; weak references keep freed
    or swapped-in tensors (``functional_call``) from matching. With gradients enabled,
    inputs that require them are never cached (the value would carry a graph). The owners
    drop the value when pickled.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return compute(inputs[0])
    cached = owner.__dict__.get(name)
    if (
        cached is not None
        and len(cached[0]) == len(inputs)
        and all(
            ref() is t and version == t._version
            for (ref, version), t in zip(cached[0], inputs, strict=True)
        )
    ):
        return cached[1]
    out = compute(inputs[0])
    owner.__dict__[name] = ([(weakref.ref(t), t._version) for t in inputs], out)
    return out


class HeightModel(nn.Module):
    """Base class: ``forward(Y)`` returns the heights of the rows of ``Y``.

    Heights are a fixed quadratic offset ``-1/2 (y - c)^T P (y - c)`` plus a trainable
    correction. ``P = I, c = 0`` (the default) starts from the Voronoi map; :func:`set_offset`
    with the dual potential of the Gaussian (Bures) map between the source and target moments
    starts from that affine map instead. ``uses_index`` is true when the model stores one free
    parameter per target point, so it is tied to the targets it was built for.
    """

    uses_index = False

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("offset_center", torch.zeros(n_features))
        self.register_buffer("offset_precision", torch.eye(n_features))

    def offset(self, Y: Tensor) -> Tensor:
        # Kept for the same ``Y`` and buffers: every step asks for it, and in high dimension
        # it costs a product of ``Y`` with a d x d matrix (as much as a pass's scores at
        # d = m). It has no trainable part, so it is kept with gradients enabled too.
        return _cached(
            self, "_cached_offset", [Y, self.offset_center, self.offset_precision], self._offset
        )

    def _offset(self, Y: Tensor) -> Tensor:
        Z = Y - self.offset_center
        return -0.5 * ((Z @ self.offset_precision) * Z).sum(dim=1)

    def __getstate__(self):
        state = dict(super().__getstate__())
        for name in ("_cached", "_cached_offset"):
            state.pop(name, None)  # weak references: neither picklable nor worth copying
        return state

    def correction(self, Y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, Y: Tensor) -> Tensor:
        return self.offset(Y) + self.correction(Y)


class VectorHeights(HeightModel):
    """A free height per target point (the classic AE-OT / Gu et al. variational solver)."""

    uses_index = True

    def __init__(self, n_features: int, n_targets: int):
        super().__init__(n_features)
        self.residual = nn.Parameter(torch.zeros(n_targets))

    def correction(self, Y: Tensor) -> Tensor:
        if Y.shape[0] != self.residual.shape[0]:
            raise ValueError(
                f"this height vector was built for {self.residual.shape[0]} target points, "
                f"got {Y.shape[0]}"
            )
        return self.residual


class _MLP(nn.Module):
    """MLP with an optional random Fourier embedding of its input.

    Heights vary on the scale of the spacing between targets; a plain MLP is biased towards
    smooth functions and cannot follow that. Random features ``sin(2 pi <b, y>)``,
    ``cos(2 pi <b, y>)`` with ``b ~ N(0, frequency^2 I)`` fix it (Tancik et al., 2020).
    """

    def __init__(
        self,
        n_features: int,
        hidden_layer_sizes: Sequence[int],
        frequency: float = 0.0,
        n_fourier: int = 128,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.register_buffer(
            "freqs",
            frequency
            * torch.randn(n_features, n_fourier if frequency > 0 else 0, generator=generator),
        )
        layers: list[nn.Module] = []
        width = n_features + 2 * self.freqs.shape[1]
        for size in hidden_layer_sizes:
            layers += [nn.Linear(width, size), nn.SiLU()]
            width = size
        last = nn.Linear(width, 1)
        # Start from a zero correction: the first map is the Voronoi (nearest-target) map.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.layers = nn.Sequential(*layers)

    def forward(self, Y: Tensor) -> Tensor:
        # Without gradients, the output for the same ``Y`` and the same parameter tensors is
        # kept: the free heights' Newton steps and a stream's chunks ask for it again and
        # again while only the residual moves (a 256-wide network on 1,000 targets costs more
        # than a chunk's cells).
        return _cached(self, "_cached", [Y, self.freqs, *self.parameters()], self._forward)

    def _forward(self, Y: Tensor) -> Tensor:
        out = Y
        if self.freqs.shape[1]:
            z = 2 * math.pi * (Y @ self.freqs)
            out = torch.cat([Y, torch.sin(z), torch.cos(z)], dim=1)
        return self.layers(out).squeeze(-1)

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_cached", None)  # a weak reference: neither picklable nor worth copying
        return state


class NetworkHeights(HeightModel):
    """OT-Net heights ``h_j = -|y_j|^2 / 2 + f_theta(y_j)`` with an MLP ``f_theta``.

    No batch-dependent layers: a point's height never depends on the other targets, so the
    trained network gives heights for new target points at once.
    """

    def __init__(
        self,
        n_features: int,
        hidden_layer_sizes: Sequence[int] = (256, 256),
        frequency: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__(n_features)
        self.net = _MLP(n_features, hidden_layer_sizes, frequency, generator=generator)

    def correction(self, Y: Tensor) -> Tensor:
        return self.net(Y)


class ResidualHeights(HeightModel):
    """Network plus a free residual per target point: ``h_j = f_theta(y_j) + r_j``.

    The residual removes the network's approximation error; the network keeps its
    generalisation to new target points.
    """

    uses_index = True

    def __init__(
        self,
        n_features: int,
        n_targets: int,
        hidden_layer_sizes: Sequence[int] = (256, 256),
        frequency: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__(n_features)
        self.net = _MLP(n_features, hidden_layer_sizes, frequency, generator=generator)
        self.residual = nn.Parameter(torch.zeros(n_targets))

    def correction(self, Y: Tensor) -> Tensor:
        if Y.shape[0] != self.residual.shape[0]:
            raise ValueError(
                f"this residual was built for {self.residual.shape[0]} target points, "
                f"got {Y.shape[0]}"
            )
        return self.net(Y) + self.residual


def gaussian_offset(
    X: Tensor,
    Y: Tensor,
    x_weight: Tensor | None = None,
    y_weight: Tensor | None = None,
    group: LocalGroup = LOCAL,
) -> tuple[Tensor, Tensor]:
    """Centre ``c`` and precision ``P`` of the dual potential of the Gaussian OT map.

    The optimal map between Gaussians with the moments of the source and the target is
    ``T(x) = A x + c`` with ``A = S^-1/2 (S^1/2 St S^1/2)^1/2 S^-1/2`` symmetric positive
    definite; its Brenier potential is ``x^T A x / 2 + <c, x>``, whose Legendre dual gives
    heights ``-1/2 (y - c)^T A^-1 (y - c)``. Returns ``(c, A^-1)`` in float64. Covariances get
    a small ridge so that degenerate data (fewer samples than features, flat directions) stay
    well conditioned. With a distributed ``group`` the source's moments are summed over the
    ranks (each holding some of its rows).
    """

    def moments(Z, w, group):
        # Accumulated in float64 over row chunks: no full-size float64 copy of the data.
        n, d = Z.shape
        total = torch.zeros((), dtype=torch.float64, device=Z.device)
        first = torch.zeros(d, dtype=torch.float64, device=Z.device)
        second = torch.zeros(d, d, dtype=torch.float64, device=Z.device)
        rows = max(1, default_block_elements(Z.device) // max(d, 1))
        for r0 in range(0, n, rows):
            Zc = Z[r0 : r0 + rows].double()
            wc = (
                torch.ones(Zc.shape[0], dtype=torch.float64, device=Z.device)
                if w is None
                else w[r0 : r0 + rows].double()
            )
            total += wc.sum()
            first += wc @ Zc
            second += Zc.T @ (Zc * wc[:, None])
        flat = group.sum(torch.cat([total[None], first, second.reshape(-1)]))
        total, first, second = flat[0], flat[1 : d + 1], flat[d + 1 :].view(d, d)
        mean = first / total
        return mean, second / total - torch.outer(mean, mean)

    def roots(C):
        # C^1/2 and C^-1/2 from one eigendecomposition.
        vals, vecs = torch.linalg.eigh(C)
        vals = vals.clamp(min=1e-12)
        return (vecs * vals.sqrt()) @ vecs.T, (vecs * vals.rsqrt()) @ vecs.T

    ms, Cs = moments(X, x_weight, group)
    mt, Ct = moments(Y, y_weight, LOCAL)  # the target is the same on every rank
    d = X.shape[1]
    ridge = 1e-3 * (torch.trace(Cs) + torch.trace(Ct)) / (2 * d) + 1e-12
    eye = torch.eye(d, dtype=Cs.dtype, device=Cs.device)
    Cs, Ct = Cs + ridge * eye, Ct + ridge * eye
    root, inv_root = roots(Cs)
    middle, inv_middle = roots(root @ Ct @ root)
    A = inv_root @ middle @ inv_root
    A = 0.5 * (A + A.T)
    precision = root @ inv_middle @ root  # A^-1, without a third factorisation
    center = mt - A @ ms
    return center, 0.5 * (precision + precision.T)


def typical_spacing(
    Y: Tensor, n_queries: int = 1024, generator: torch.Generator | None = None
) -> float:
    """Median distance from a target point to its nearest other target point.

    Measured for at most ``n_queries`` random targets against all of them, in chunks, so it
    costs ``O(n_queries x m x d)`` time and ``O(n_queries x chunk)`` memory.
    """
    m = Y.shape[0]
    if m < 2:
        return 1.0
    q = torch.randperm(m, generator=generator)[: min(n_queries, m)].to(Y.device)
    Q = Y[q]
    best = torch.full((Q.shape[0],), math.inf, dtype=Y.dtype, device=Y.device)
    chunk = max(1, default_block_elements(Y.device) // Q.shape[0])
    for c0 in range(0, m, chunk):
        dist = torch.cdist(Q, Y[c0 : c0 + chunk])
        own = q[:, None] == torch.arange(c0, c0 + dist.shape[1], device=Y.device)[None, :]
        dist[own] = math.inf
        best = torch.minimum(best, dist.min(dim=1).values)
    best = best[torch.isfinite(best) & (best > 0)]
    return float(best.median()) if best.numel() else 1.0


def make_height_model(
    kind: str,
    n_features: int,
    n_targets: int,
    hidden_layer_sizes: Sequence[int] = (256, 256),
    frequency: float = 0.0,
    generator: torch.Generator | None = None,
) -> HeightModel:
    """Build the height model named ``kind`` (one of :data:`HEIGHT_KINDS`).

    ``frequency`` is the standard deviation of the random Fourier frequencies of the network
    (``0``: no Fourier embedding). Weights are drawn from ``generator`` when given.
    """
    if kind == "vector":
        return VectorHeights(n_features, n_targets)
    if kind not in HEIGHT_KINDS:
        raise ValueError(f"height must be one of {HEIGHT_KINDS}, got {kind!r}")
    if generator is not None:
        # nn.Linear draws its initial weights from the global generator: seed a private copy.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            return make_height_model(
                kind, n_features, n_targets, hidden_layer_sizes, frequency, None
            )
    if kind == "network":
        return NetworkHeights(n_features, hidden_layer_sizes, frequency)
    return ResidualHeights(n_features, n_targets, hidden_layer_sizes, frequency)


def initial_height_model(
    kind: str,
    X: Tensor,
    Y: Tensor,
    x_weight: Tensor | None,
    y_weight: Tensor,
    *,
    hidden_layer_sizes: Sequence[int],
    fourier_scale: float,
    init: str,
    generator: torch.Generator,
    group: LocalGroup = LOCAL,
) -> HeightModel:
    """The height model a fit starts from, for source ``X`` and target ``Y`` (standardised).

    Fourier frequencies of the network are ``fourier_scale`` over the typical spacing of the
    target points; ``init="gaussian"`` starts from the optimal affine map between Gaussians
    with the moments of source and target (:func:`gaussian_offset`), ``"voronoi"`` from the
    nearest-target map. With a distributed ``group``, ``X`` is this rank's rows and the source
    moments are the union's.
    """
    frequency = 0.0
    if kind != "vector" and fourier_scale > 0:
        frequency = fourier_scale / typical_spacing(Y, generator=generator)
    model = make_height_model(
        kind, X.shape[1], Y.shape[0], hidden_layer_sizes, frequency, generator=generator
    )
    if init == "gaussian":
        center, precision = gaussian_offset(X, Y, x_weight, y_weight, group=group)
        with torch.no_grad():
            model.offset_center.copy_(center)
            model.offset_precision.copy_(precision)
    return model
