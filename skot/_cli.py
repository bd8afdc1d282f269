"""The ``skot`` command line.

``skot color-transfer SOURCE_IMAGE REFERENCE_IMAGE OUTPUT_IMAGE`` gives the source image the
colour distribution of the reference image: it learns the optimal transport map from a sample
of source pixels onto a sample of reference pixels (RGB colours as 3-D points), then maps every
pixel of the source image. By default the colour displacement of that map (mapped colour minus
source colour) is then smoothed by a guided filter whose guide is the source image (edge-aware:
it follows the source's edges and adds none), as in regularised OT colour transfer; ``--hard``
keeps the sharp map. Images are read and written with Pillow (the ``image`` extra).

Every failure the user can cause (a missing or unreadable image, an output that exists or
cannot be written, a bad option) ends with one line on stderr and a non-zero exit status, never
a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["console", "main"]

#: Gradient thresholds of :func:`_spurious_edges` (colour values in [0, 1], per pixel step).
STRONG_EDGE, WEAK_EDGE = 0.1, 0.02

PROG = "skot"

#: Exit statuses: 0 success, 1 a failure at run time, 2 a usage error (as argparse does).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CLIError(Exception):
    """A failure to report on one line, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and an exception, not ``sys.exit``."""

    def error(self, message):  # noqa: D401 - argparse's signature
        raise CLIError(f"{self.prog}: error: {message} (see '{self.prog} --help')", EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _build_parser() -> _Parser:
    from . import __version__

    parser = _Parser(
        prog=PROG,
        description="Semi-discrete optimal transport (OT-Net) from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    ct = sub.add_parser(
        "color-transfer",
        help="give an image the colours of another one",
        description=(
            "Give SOURCE_IMAGE the colour distribution of REFERENCE_IMAGE and write the result "
            "to OUTPUT_IMAGE. The optimal transport map between the RGB colours is learned "
            "from a random sample of source pixels onto a random sample of reference pixels, "
            "then applied to every pixel of the source image. Formats: whatever Pillow reads "
            "and writes (PNG, JPEG, BMP, TIFF, WebP, ...), chosen by the file extension. An "
            "alpha channel is dropped. The sampled source colours are spread uniformly over "
            "their 8-bit bins, so that no colour is an atom the map cannot split. By default "
            "the colour change is smoothed by a guided filter that follows the source image's "
            "edges (no blocky or jagged edges where the source has none); --hard keeps the "
            "sharp map (every pixel takes one reference colour)."
        ),
    )
    ct.add_argument("source", metavar="SOURCE_IMAGE", help="image whose colours are changed")
    ct.add_argument("reference", metavar="REFERENCE_IMAGE", help="image giving the colours")
    ct.add_argument("output", metavar="OUTPUT_IMAGE", help="where to write the result")
    ct.add_argument(
        "-n",
        "--sample-size",
        type=_positive_int,
        default=5_000,
        help="source pixels used to learn the map (default: %(default)s)",
    )
    ct.add_argument(
        "-m",
        "--reference-size",
        type=_positive_int,
        default=128,
        help="reference pixels used as target colours (default: %(default)s)",
    )
    ct.add_argument(
        "--height",
        choices=("vector", "network", "residual"),
        default="vector",
        help="height parameterisation of OTNetTransport (default: %(default)s)",
    )
    ct.add_argument(
        "--max-iter",
        type=_positive_int,
        default=1_000,
        help="maximum number of optimisation steps (default: %(default)s)",
    )
    ct.add_argument(
        "--tol",
        type=_non_negative_float,
        default=0.05,
        help="target marginal error (total variation) (default: %(default)s)",
    )
    ct.add_argument(
        "--epsilon",
        type=_non_negative_float,
        default=0.0,
        help="entropic smoothing: 0 maps every pixel to one reference colour, > 0 to a "
        "smooth blend (default: %(default)s)",
    )
    ct.add_argument(
        "--hard",
        action="store_true",
        help="keep the sharp map: no smoothing of the colour change (every pixel takes the "
        "colour the map gives it)",
    )
    ct.add_argument(
        "--radius",
        type=_positive_int,
        default=None,
        help="radius in pixels of the guided filter that smooths the colour change "
        "(default: the image's shorter side / 50, at least 4)",
    )
    ct.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N' (default: %(default)s)",
    )
    ct.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the samples and the solver (default: %(default)s)",
    )
    ct.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: print sizes and timings; -vv: also the solver's progress lines",
    )
    progress = ct.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    ct.add_argument(
        "-f", "--force", action="store_true", help="overwrite OUTPUT_IMAGE if it exists"
    )
    ct.set_defaults(handler=_color_transfer)
    return parser


# --------------------------------------------------------------------------- images
def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise CLIError(
            "color-transfer needs Pillow to read and write images; install it with "
            '`pip install pillow` or `pip install "skot[image]"`'
        ) from None
    return Image


def _read_image(path: str, role: str) -> np.ndarray:
    """Read an image as an ``(height, width, 3)`` uint8 RGB array, or fail on one line."""
    Image = _pil()
    p = Path(path)
    if not p.exists():
        raise CLIError(f"cannot read {role} '{path}': no such file")
    if p.is_dir():
        raise CLIError(f"cannot read {role} '{path}': it is a directory")
    try:
        with Image.open(p) as img:
            img.load()
            rgb = img.convert("RGB")
    except PermissionError:
        raise CLIError(f"cannot read {role} '{path}': permission denied") from None
    except Image.UnidentifiedImageError:
        raise CLIError(f"cannot read {role} '{path}': not an image format Pillow knows") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CLIError(f"cannot read {role} '{path}': {_reason(exc)}") from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[0] * array.shape[1] == 0:
        raise CLIError(f"cannot read {role} '{path}': the image is empty")
    return array


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _check_output(path: str, force: bool) -> str:
    """Fail early (before any work) when ``path`` cannot be written; return Pillow's format."""
    Image = _pil()
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"cannot write output '{path}': it is a directory")
    ext = p.suffix.lower()
    formats = Image.registered_extensions()
    if ext not in formats:
        known = ", ".join(
            sorted({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} & set(formats))
        )
        raise CLIError(
            f"cannot write output '{path}': unknown image extension {ext or '(none)'!r} "
            f"(use one of {known}, ...)"
        )
    fmt = formats[ext]
    if fmt not in Image.SAVE:
        raise CLIError(f"cannot write output '{path}': Pillow cannot save {fmt} images")
    if p.exists() and not force:
        raise CLIError(f"output '{path}' already exists; use --force to overwrite it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise CLIError(f"cannot write output '{path}': directory '{parent}' does not exist")
    if not parent.is_dir():
        raise CLIError(f"cannot write output '{path}': '{parent}' is not a directory")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise CLIError(f"cannot write output '{path}': permission denied")
    return fmt


def _write_image(array: np.ndarray, path: str, fmt: str) -> None:
    Image = _pil()
    try:
        Image.fromarray(array).save(path, format=fmt)
    except PermissionError:
        raise CLIError(f"cannot write output '{path}': permission denied") from None
    except (OSError, ValueError, KeyError) as exc:
        raise CLIError(f"cannot write output '{path}': {_reason(exc)}") from None


# -------------------------------------------------------------------------- command
def _sample_positions(n: int, size: int, rng: np.random.Generator) -> np.ndarray | None:
    """``size`` distinct positions among ``n`` pixels (``None``: all of them)."""
    return None if size >= n else rng.choice(n, size, replace=False)


def _sample_pixels(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if size >= pixels.shape[0]:
        return pixels
    return pixels[rng.choice(pixels.shape[0], size, replace=False)]


def _box(a: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the ``(2 radius + 1)^2`` window of every pixel (edges reflected), per channel."""
    from scipy.ndimage import uniform_filter

    size = (2 * radius + 1, 2 * radius + 1) + (1,) * (a.ndim - 2)
    return uniform_filter(a, size=size, mode="reflect")


def _guided_filter(
    guide: np.ndarray, values: np.ndarray, radius: int, eps: float, subsample: int = 1
) -> np.ndarray:
    """Edge-aware smoothing of ``values`` (h, w, c) guided by the colour image ``guide``
    (h, w, 3), both float in [0, 1] units (He, Sun, Tang, "Guided image filtering", 2010).

    In every window the output is an affine function of the guide's colour fitted to
    ``values`` by ridge regression (``eps`` the ridge, in squared colour units); the fits of
    the windows covering a pixel are averaged. Where the guide is flat the output is the
    window's mean (smooth); across an edge of the guide it follows the edge, so it adds no
    edge that the guide does not have. With ``subsample = s > 1`` the fits are computed on
    the images shrunk ``s`` times (window radius ``radius / s``) and their coefficients
    enlarged back (bilinear) before being applied to the full-resolution guide (He and Sun,
    "Fast guided filter", 2015): ``s^2`` times less work, the same edges.
    """
    from scipy.ndimage import zoom

    h, w = guide.shape[:2]
    c = values.shape[2]
    small_guide, small_values, r = guide, values, radius
    if subsample > 1:
        small_guide = _shrink(guide, subsample)
        small_values = _shrink(values, subsample)
        r = max(1, round(radius / subsample))
    sh, sw = small_guide.shape[:2]
    mean_i = _box(small_guide, r)
    mean_v = _box(small_values, r)
    cov_iv = _box((small_guide[..., :, None] * small_values[..., None, :]).reshape(sh, sw, -1), r)
    cov_iv = cov_iv.reshape(sh, sw, 3, c) - mean_i[..., :, None] * mean_v[..., None, :]
    var_i = _box((small_guide[..., :, None] * small_guide[..., None, :]).reshape(sh, sw, 9), r)
    var_i = var_i.reshape(sh, sw, 3, 3) - mean_i[..., :, None] * mean_i[..., None, :]
    a = np.linalg.solve(var_i + eps * np.eye(3, dtype=guide.dtype), cov_iv)
    b = mean_v - np.einsum("hwi,hwic->hwc", mean_i, a)
    coef = np.concatenate([_box(a.reshape(sh, sw, 3 * c), r), _box(b, r)], axis=2)
    if subsample > 1:
        coef = zoom(coef, (h / sh, w / sw, 1), order=1, mode="nearest", grid_mode=True)
    mean_a = coef[..., : 3 * c].reshape(h, w, 3, c)
    return np.einsum("hwi,hwic->hwc", guide, mean_a) + coef[..., 3 * c :]


def _shrink(a: np.ndarray, s: int) -> np.ndarray:
    """Mean over ``s x s`` blocks (the last partial blocks included)."""
    h, w = a.shape[:2]
    H, W = -(-h // s) * s, -(-w // s) * s
    padded = np.pad(a, ((0, H - h), (0, W - w), (0, 0)), mode="edge")
    return padded.reshape(H // s, s, W // s, s, -1).mean(axis=(1, 3))


def _gradient(image: np.ndarray) -> np.ndarray:
    """Per pixel, the largest over the channels of the forward-difference gradient's norm
    (colours in [0, 1]; a uint8 image is divided by 255)."""
    a = np.asarray(image, dtype=np.float64)
    if np.asarray(image).dtype == np.uint8:
        a = a / 255.0
    if a.ndim == 2:
        a = a[..., None]
    gx = np.zeros_like(a)
    gy = np.zeros_like(a)
    gx[:, :-1] = a[:, 1:] - a[:, :-1]
    gy[:-1] = a[1:] - a[:-1]
    return np.sqrt(gx**2 + gy**2).max(axis=2)


def _spurious_edges(source, output, strong=STRONG_EDGE, weak=WEAK_EDGE) -> float:
    """Share of pixels with a strong gradient in ``output`` (norm above ``strong``) where
    ``source`` has none (below ``weak``): the edges a colour transfer invented."""
    g_out, g_in = _gradient(output), _gradient(source)
    return float(np.mean((g_out > strong) & (g_in < weak)))


def _default_radius(shape) -> int:
    return max(4, round(min(shape[:2]) / 50))


#: Ridge of the guided filter, in squared colour units ([0, 1] colours): windows whose colour
#: variance is below it are smoothed, edges above it are followed.
GUIDED_EPS = 1e-2


def _smooth_transfer(source_u8: np.ndarray, mapped: np.ndarray, radius: int) -> np.ndarray:
    """Source colours plus the guided-filtered colour displacement ``mapped - source``."""
    guide = source_u8.astype(np.float32) / 255.0
    shift = mapped.reshape(guide.shape).astype(np.float32) - guide
    subsample = max(1, radius // 3)
    return guide + _guided_filter(guide, shift, radius, GUIDED_EPS, subsample)


def _skip_dynamo_import() -> None:
    """Spare this process torch's compiler stack (``torch._dynamo``), which it never uses.

    ``torch.optim.Optimizer``'s methods are wrapped so that ``torch.compile`` does not trace
    them; the wrapper imports ``torch._dynamo`` on its first call, which costs about as much
    as importing torch itself, even for a fit whose Newton steps never step the optimiser it
    builds. In a process that compiles nothing, the wrapped method is the method itself, so
    the wrapper's cache is filled with it. Does nothing once ``torch._dynamo`` is loaded, or
    when torch's wrappers do not look as expected.
    """
    if "torch._dynamo" in sys.modules:
        return
    import torch

    try:
        marker = torch._disable_dynamo(lambda: None).__code__
    except AttributeError:
        return
    for attr in vars(torch.optim.Optimizer).values():
        fn = getattr(attr, "__wrapped__", None)
        if getattr(attr, "__code__", None) is marker and callable(fn):
            setattr(fn, "__dynamo_disable", fn)


def _distinct(colours: np.ndarray) -> int:
    """Number of distinct rows of a uint8 colour array."""
    packed = colours.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    return int(np.unique(packed).size)


def _frames(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """The ``(source, output, format)`` jobs: one image, or every image of a directory of frames.

    Fails before any work when an output cannot be written.
    """
    src = Path(args.source)
    if not src.is_dir():
        return [(args.source, args.output, _check_output(args.output, args.force))]
    Image = _pil()
    known = Image.registered_extensions()
    names = sorted(p.name for p in src.iterdir() if p.is_file() and p.suffix.lower() in known)
    if not names:
        raise CLIError(f"cannot read SOURCE_IMAGE '{args.source}': a directory without images")
    out = Path(args.output)
    if (out.exists() and not out.is_dir()) or (not out.exists() and out.suffix.lower() in known):
        raise CLIError(
            f"SOURCE_IMAGE '{args.source}' is a directory of frames, so OUTPUT_IMAGE "
            f"'{args.output}' must be a directory (one output per frame), not an image file"
        )
    if out.exists() and out.resolve() == src.resolve():
        raise CLIError(
            f"OUTPUT_IMAGE '{args.output}' is the directory of the frames: it would overwrite "
            "them; choose another output directory"
        )
    if not out.exists():
        parent = out.parent if str(out.parent) else Path(".")
        if not parent.is_dir():
            raise CLIError(
                f"cannot write output '{args.output}': directory '{parent}' does not exist"
            )
        try:
            out.mkdir()
        except OSError as exc:
            raise CLIError(f"cannot write output '{args.output}': {_reason(exc)}") from None
    return [
        (str(src / name), str(out / name), _check_output(str(out / name), args.force))
        for name in names
    ]


def _color_transfer(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.verbose else None
    jobs = _frames(args)
    many = len(jobs) > 1 or Path(args.source).is_dir()
    source = _read_image(jobs[0][0], "SOURCE_IMAGE")
    reference = _read_image(args.reference, "REFERENCE_IMAGE")
    t_read = time.perf_counter()

    # Edge cases, named by what the user asked for and what the images hold.
    ref_colours = _distinct(reference.reshape(-1, 3))
    if ref_colours < 2:
        r, g, b = (int(v) for v in reference.reshape(-1, 3)[0])
        raise CLIError(
            f"REFERENCE_IMAGE '{args.reference}' has a single colour (RGB {r}, {g}, {b}) in "
            f"all its {reference.shape[0] * reference.shape[1]} pixels: there is no colour "
            "distribution to transfer"
        )
    if args.reference_size < 2:
        raise CLIError(
            f"--reference-size {args.reference_size} samples a single reference pixel (of the "
            f"{ref_colours} distinct colours of REFERENCE_IMAGE), so every pixel would get "
            "that one colour; use --reference-size 2 or more",
            EXIT_USAGE,
        )

    from sklearn.exceptions import ConvergenceWarning

    from . import OTNetTransport
    from ._validation import resolve_device
    from .callbacks import ProgressBar

    _skip_dynamo_import()
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CLIError(f"bad --device: {exc}", EXIT_USAGE) from None
    t_import = time.perf_counter()

    rng = np.random.default_rng(args.seed)
    pixels = source.reshape(-1, 3).astype(np.float32) / 255.0
    positions = _sample_positions(pixels.shape[0], args.sample_size, rng)
    X = pixels if positions is None else pixels[positions]
    Y_u8 = _sample_pixels(reference.reshape(-1, 3), args.reference_size, rng)
    sampled_colours = _distinct(Y_u8)
    if sampled_colours < 2:
        raise CLIError(
            f"the {Y_u8.shape[0]} reference pixels sampled (--reference-size "
            f"{args.reference_size}) all have one colour, although REFERENCE_IMAGE has "
            f"{ref_colours}; raise --reference-size or change --seed"
        )
    Y = Y_u8.astype(np.float32) / 255.0
    show = sys.stderr.isatty() if args.progress is None else args.progress
    # One estimator for every frame: the first fit is cold, each next one starts from the
    # previous frame's heights (warm_start), onto the same reference colours.
    ot = OTNetTransport(
        height=args.height,
        max_iter=args.max_iter,
        tol=args.tol,
        batch_size=min(4096, X.shape[0]),
        epsilon=args.epsilon,
        device=str(device),
        warm_start=True,
        random_state=args.seed,
        verbose=1 if args.verbose >= 2 else 0,
        callbacks=[ProgressBar(enabled=bool(show))],
    )
    steps_before, unconverged = 0, []
    for k, (src_path, out_path, fmt) in enumerate(jobs):
        t_frame = time.perf_counter()
        if k > 0:
            size = pixels.shape[0]
            source = _read_image(src_path, f"frame '{src_path}'")
            pixels = source.reshape(-1, 3).astype(np.float32) / 255.0
            # The same pixel positions and jitter as the previous frame (when its size is
            # the same): the samples of two close frames differ only where the frames do.
            if pixels.shape[0] != size:
                positions, jitter = _sample_positions(pixels.shape[0], args.sample_size, rng), None
            X = pixels if positions is None else pixels[positions]
        t_read_frame = time.perf_counter()
        # 8-bit colours are bins of width 1/255, so many sampled pixels share one colour, and
        # the hard map cannot split a colour between two cells: on china.jpg -> flower.jpg
        # that left the marginal error stuck at 0.047. Spreading each sampled colour
        # uniformly over its bin removes that floor; every pixel of the image is then mapped
        # from its own colour.
        if k == 0 or jitter is None:
            jitter = rng.uniform(-0.5 / 255.0, 0.5 / 255.0, size=X.shape).astype(np.float32)
        X = X + jitter
        radius = args.radius or _default_radius(source.shape)
        if say and k == 0:
            frames = f"{len(jobs)} frames of " if many else ""
            say(
                f"source {frames}{source.shape[1]}x{source.shape[0]} ({pixels.shape[0]} "
                f"pixels), reference {reference.shape[1]}x{reference.shape[0]} ({ref_colours} "
                f"distinct colours); fitting on {X.shape[0]} source pixels onto {Y.shape[0]} "
                f"reference pixels ({sampled_colours} distinct colours), device {device}; "
                + ("hard map" if args.hard else f"guided-filter smoothing, radius {radius}")
            )
        try:
            with warnings.catch_warnings():
                # Reported below, in the command's own words.
                warnings.simplefilter("ignore", ConvergenceWarning)
                ot.fit(X, X_target=Y)
        except ValueError as exc:  # e.g. a diverged solver: report, don't trace
            where = f" on frame '{src_path}'" if many else ""
            raise CLIError(f"fitting failed{where}: {_reason(exc)}") from None
        steps, steps_before = ot.n_iter_ - steps_before, ot.n_iter_
        t_fit = time.perf_counter()
        mapped = ot.transform(pixels)
        t_map = time.perf_counter()
        if not args.hard:
            mapped = _smooth_transfer(source, mapped, radius)
        t_smooth = time.perf_counter()
        out = np.clip(np.rint(mapped * 255.0), 0, 255).astype(np.uint8).reshape(source.shape)
        _write_image(out, out_path, fmt)
        t_end = time.perf_counter()
        if not ot.converged_:
            unconverged.append((src_path, ot.marginal_error_, steps))
        if not say:
            continue
        state = "converged" if ot.converged_ else "not converged (raise --max-iter or --tol)"
        smooth = "" if args.hard else f"smoothed in {t_smooth - t_map:.2f} s; "
        if many:
            say(
                f"frame {k + 1}/{len(jobs)} '{src_path}': fit ({'warm' if k else 'cold'}) "
                f"{steps} steps, marginal error {ot.marginal_error_:.4f} ({state}), "
                f"{t_fit - t_read_frame:.2f} s; mapped in {t_map - t_fit:.2f} s; {smooth}"
                f"read {t_read_frame - t_frame:.2f} s, wrote '{out_path}' in "
                f"{t_end - t_smooth:.2f} s; frame total {t_end - t_frame:.2f} s"
            )
        else:
            say(
                f"fit: {steps} steps, marginal error {ot.marginal_error_:.4f} ({state}), "
                f"{t_fit - t_import:.2f} s; mapped {pixels.shape[0]} pixels in "
                f"{t_map - t_fit:.2f} s; {smooth}read {t_read - t_start:.2f} s, imported "
                f"torch and scikit-learn in {t_import - t_read:.2f} s, wrote '{out_path}' in "
                f"{t_end - t_smooth:.2f} s; total {t_end - t_start:.2f} s"
            )
    for src_path, error, steps in unconverged:
        frame = f" on frame '{src_path}'" if many else ""
        print(
            f"{PROG}: warning: the map did not reach --tol {args.tol:g}{frame} (marginal error "
            f"{error:.4f} after {steps} steps); the output was written anyway; raise "
            "--max-iter or --tol",
            file=sys.stderr,
            flush=True,
        )
    if say and many:
        say(f"{len(jobs)} frames in {time.perf_counter() - t_start:.2f} s")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the ``skot`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Parameters
    ----------
    argv : list of str, default=None
        The arguments, without the program name.

    Returns
    -------
    status : int
        The exit status: 0 on success, 1 on a failure at run time, 2 on a usage error.

    Examples
    --------
    >>> from skot._cli import main
    >>> main(["--version"])  # doctest: +ELLIPSIS
    skot ...
    0
    """
    parser = _build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
        if getattr(args, "handler", None) is None:
            raise CLIError(
                f"{PROG}: error: a command is required (see '{PROG} --help')", EXIT_USAGE
            )
        return args.handler(args)
    except CLIError as exc:
        print(_one_line(str(exc)), file=sys.stderr, flush=True)
        return exc.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except MemoryError:
        print(
            f"{PROG}: error: out of memory (lower --sample-size or --reference-size)",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_FAILURE
    except Exception as exc:  # never a traceback for the user
        print(
            _one_line(f"{PROG}: error: {type(exc).__name__}: {_reason(exc)}"),
            file=sys.stderr,
            flush=True,
        )
        return EXIT_FAILURE


def console() -> None:
    """Run :func:`main` on ``sys.argv[1:]`` and end the process with its exit status.

    The entry point of ``python -m skot``. Everything the command writes is flushed and
    closed, then the process ends at once (``os._exit``): the interpreter's teardown of torch
    and scikit-learn, which can take as long as the work on a small image, is skipped.
    OpenMP's threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE`` unless set, read when
    torch loads): with its default spinning, a machine whose cores are busy with other work
    made the command several times slower.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _one_line(message: str) -> str:
    message = " ".join(message.split())
    if not message.startswith(f"{PROG}"):
        message = f"{PROG}: error: {message}"
    return message
