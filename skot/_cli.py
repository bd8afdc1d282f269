"""The ``skot`` command line.

``skot color-transfer SOURCE_IMAGE REFERENCE_IMAGE OUTPUT_IMAGE`` gives the source image the
colour distribution of the reference image: it learns the optimal transport map from a sample
of source pixels onto a sample of reference pixels (RGB colours as 3-D points), then maps every
pixel of the source image. Images are read and written with Pillow (the ``image`` extra).

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

__all__ = ["main"]

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
            "their 8-bit bins, so that no colour is an atom the map cannot split."
        ),
    )
    ct.add_argument("source", metavar="SOURCE_IMAGE", help="image whose colours are changed")
    ct.add_argument("reference", metavar="REFERENCE_IMAGE", help="image giving the colours")
    ct.add_argument("output", metavar="OUTPUT_IMAGE", help="where to write the result")
    ct.add_argument(
        "-n",
        "--sample-size",
        type=_positive_int,
        default=10_000,
        help="source pixels used to learn the map (default: %(default)s)",
    )
    ct.add_argument(
        "-m",
        "--reference-size",
        type=_positive_int,
        default=300,
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
def _sample_pixels(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if size >= pixels.shape[0]:
        return pixels
    return pixels[rng.choice(pixels.shape[0], size, replace=False)]


def _color_transfer(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.verbose else None
    fmt = _check_output(args.output, args.force)
    source = _read_image(args.source, "SOURCE_IMAGE")
    reference = _read_image(args.reference, "REFERENCE_IMAGE")
    t_read = time.perf_counter()

    from sklearn.exceptions import ConvergenceWarning

    from . import OTNetTransport
    from ._validation import resolve_device
    from .callbacks import ProgressBar

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CLIError(f"bad --device: {exc}", EXIT_USAGE) from None

    rng = np.random.default_rng(args.seed)
    pixels = source.reshape(-1, 3).astype(np.float32) / 255.0
    ref_pixels = reference.reshape(-1, 3).astype(np.float32) / 255.0
    X = _sample_pixels(pixels, args.sample_size, rng)
    Y = _sample_pixels(ref_pixels, args.reference_size, rng)
    # 8-bit colours are bins of width 1/255, so many sampled pixels share one colour, and the
    # hard map cannot split a colour between two cells: on china.jpg -> flower.jpg that left the
    # marginal error stuck at 0.047. Spreading each sampled colour uniformly over its bin
    # removes that floor; every pixel of the image is then mapped from its own colour.
    X = X + rng.uniform(-0.5 / 255.0, 0.5 / 255.0, size=X.shape).astype(np.float32)
    if np.unique(Y, axis=0).shape[0] < 2:
        raise CLIError(
            f"REFERENCE_IMAGE '{args.reference}' has a single colour: there is nothing to transfer"
        )
    if say:
        say(
            f"source {source.shape[1]}x{source.shape[0]} ({pixels.shape[0]} pixels), "
            f"reference {reference.shape[1]}x{reference.shape[0]}; fitting on {X.shape[0]} "
            f"source pixels onto {Y.shape[0]} reference colours, device {device}"
        )
    show = sys.stderr.isatty() if args.progress is None else args.progress
    ot = OTNetTransport(
        height=args.height,
        max_iter=args.max_iter,
        tol=args.tol,
        batch_size=min(4096, X.shape[0]),
        epsilon=args.epsilon,
        device=str(device),
        random_state=args.seed,
        verbose=1 if args.verbose >= 2 else 0,
        callbacks=[ProgressBar(enabled=bool(show))],
    )
    try:
        with warnings.catch_warnings():
            # Reported below, in the command's own words.
            warnings.simplefilter("ignore", ConvergenceWarning)
            ot.fit(X, X_target=Y)
    except ValueError as exc:  # e.g. a diverged solver: report, don't trace
        raise CLIError(f"fitting failed: {_reason(exc)}") from None
    t_fit = time.perf_counter()
    mapped = ot.transform(pixels)
    out = np.clip(np.rint(mapped * 255.0), 0, 255).astype(np.uint8).reshape(source.shape)
    t_map = time.perf_counter()
    _write_image(out, args.output, fmt)
    t_end = time.perf_counter()
    if not ot.converged_:
        print(
            f"{PROG}: warning: the map did not reach --tol {args.tol:g} (marginal error "
            f"{ot.marginal_error_:.4f} after {ot.n_iter_} steps); the output was written "
            "anyway; raise --max-iter or --tol",
            file=sys.stderr,
            flush=True,
        )
    if say:
        state = "converged" if ot.converged_ else "not converged (raise --max-iter or --tol)"
        say(
            f"fit: {ot.n_iter_} steps, marginal error {ot.marginal_error_:.4f} ({state}), "
            f"{t_fit - t_read:.2f} s; mapped {pixels.shape[0]} pixels in {t_map - t_fit:.2f} s; "
            f"read {t_read - t_start:.2f} s, wrote '{args.output}' in {t_end - t_map:.2f} s; "
            f"total {t_end - t_start:.2f} s"
        )
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


def _one_line(message: str) -> str:
    message = " ".join(message.split())
    if not message.startswith(f"{PROG}"):
        message = f"{PROG}: error: {message}"
    return message
