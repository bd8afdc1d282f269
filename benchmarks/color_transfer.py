"""Colour transfer: ``skot color-transfer`` with its defaults against POT's Sinkhorn-mapping
colour transfer, on scikit-learn's sample photographs (``china.jpg`` onto ``flower.jpg``,
427 x 640 pixels).

Measures: end-to-end wall time of the command in a fresh process (reading, fitting, mapping
every pixel, smoothing, writing; best of three), the **spurious-edge score** (share of pixels
whose output gradient is strong, norm above 0.1 per pixel step in [0, 1] colour units, where the
source's is below 0.02: edges the transfer invented; ``skot._cli._spurious_edges``), and how
far the output's colours are from the reference's (sliced Wasserstein-2 distance over 64
random directions, [0, 1] units; the source itself is the "no transfer" row).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ._util import REPO, load_note, md_table, section_header

__all__ = ["pot_sinkhorn_transfer", "sliced_w2", "run"]


def sliced_w2(A, B, n_dirs=64, n=20_000, seed=0) -> float:
    """Sliced Wasserstein-2 distance between two colour clouds (rows, [0, 1] units)."""
    rng = np.random.default_rng(seed)
    A = A[rng.choice(len(A), min(n, len(A)), replace=False)]
    B = B[rng.choice(len(B), min(n, len(B)), replace=False)]
    k = min(len(A), len(B))
    dirs = rng.standard_normal((n_dirs, A.shape[1]))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    qa = np.sort(A[:k] @ dirs.T, axis=0)
    qb = np.sort(B[:k] @ dirs.T, axis=0)
    return float(np.sqrt(((qa - qb) ** 2).mean()))


def pot_sinkhorn_transfer(source, reference, n_samples=1000, reg_e=1e-1, seed=0):
    """POT's colour-transfer example: ``ot.da.SinkhornTransport(reg_e)`` fitted on
    ``n_samples`` random pixels of each image, then ``transform`` of every source pixel.
    Returns the output (uint8), fit seconds and transform seconds."""
    import ot

    rng = np.random.RandomState(seed)
    X1 = source.reshape(-1, 3).astype(np.float64) / 255.0
    X2 = reference.reshape(-1, 3).astype(np.float64) / 255.0
    Xs = X1[rng.randint(X1.shape[0], size=n_samples)]
    Xt = X2[rng.randint(X2.shape[0], size=n_samples)]
    t = time.perf_counter()
    sink = ot.da.SinkhornTransport(reg_e=reg_e).fit(Xs=Xs, Xt=Xt)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    out = sink.transform(Xs=X1)
    map_s = time.perf_counter() - t
    img = np.clip(np.rint(out * 255), 0, 255).astype(np.uint8).reshape(source.shape)
    return img, fit_s, map_s


def _cli(src, ref, out, extra, threads=1):
    """Run ``python -m skot color-transfer`` in a fresh process; (wall seconds, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "skot", "color-transfer", str(src), str(ref), str(out)]
    cmd += ["-f", "-v", "--no-progress", "--device", "cpu", *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - t, proc.stderr


#: What the command's ``-v`` line says: fit seconds, steps, marginal error, total seconds.
_VERBOSE = (
    r"\), ([0-9.]+) s;",
    r"fit: ([0-9]+) steps",
    r"marginal error ([0-9.]+)",
    r"total ([0-9.]+) s",
)


def _field(stderr, pattern):
    match = re.search(pattern, stderr)
    return match.group(1) if match else "?"


_FRAME = re.compile(
    r"fit \((cold|warm)\) ([0-9]+) steps, marginal error ([0-9.]+) \(([a-z ]+)[^)]*\), "
    r"([0-9.]+) s;.*frame total ([0-9.]+) s"
)


def frame_sequence(source, n_frames, pan=6, fade=0.015):
    """``n_frames`` frames of ``source``: panned ``pan`` pixels and darkened by ``fade`` (a
    share of the colour values) per frame, so that no colour saturates."""
    base = source.astype(np.float32)
    return [
        np.clip(np.roll(base, pan * k, axis=1) * (1 - fade * k), 0, 255).round().astype(np.uint8)
        for k in range(n_frames)
    ]


def _video(tmp, ref, frames, extra):
    """Per frame: the directory command (first frame cold, the next ones warm) against one
    cold command per frame. Returns table rows and a summary."""
    from PIL import Image

    src_dir, out_dir = Path(tmp) / "frames", Path(tmp) / "out_frames"
    src_dir.mkdir()
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(src_dir / f"frame{k:02d}.png")
    wall, err = _cli(src_dir, ref, out_dir, extra)
    warm = [m.groups() for m in map(_FRAME.search, err.splitlines()) if m]
    rows, cold_frame, warm_frame = [], [], []
    for k, (kind, steps, tv, state, fit_s, total) in enumerate(warm):
        c_wall, c_err = _cli(src_dir / f"frame{k:02d}.png", ref, Path(tmp) / "cold.png", extra)
        c_total = float(_field(c_err, r"total ([0-9.]+) s"))
        c_import = float(_field(c_err, r"scikit-learn in ([0-9.]+) s"))
        cold_frame.append(c_total - c_import)
        if k:
            warm_frame.append(float(total))
        rows.append(
            [
                k + 1,
                f"{kind}: {steps} steps, {fit_s} s, error {tv} ({state}), frame {total} s",
                f"{_field(c_err, r'fit: ([0-9]+) steps')} steps, "
                f"{_field(c_err, _VERBOSE[0])}"
                f" s, error {_field(c_err, r'marginal error ([0-9.]+)')}, frame "
                f"{c_total - c_import:.2f} s (command {c_wall:.2f} s from the shell)",
            ]
        )
    summary = {
        "frames": len(warm),
        "wall": wall,
        "warm": float(np.median(warm_frame)) if warm_frame else float("nan"),
        "cold": float(np.median(cold_frame[1:] or cold_frame)),
        "first": float(warm[0][5]) if warm else float("nan"),
    }
    return rows, summary


def run(quick: bool, fig_dir: Path) -> str:
    """Time and score the command's default, its ``--hard`` map and POT's Sinkhorn mapping."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from skot._cli import _spurious_edges

    start, load = time.perf_counter(), load_note()
    source = load_sample_image("china.jpg")
    reference = load_sample_image("flower.jpg")
    if quick:
        source, reference = source[::8, ::8], reference[::8, ::8]
    repeats = 1 if quick else 3
    ref_pixels = reference.reshape(-1, 3) / 255.0
    rows, images = [], {"source": source}
    base = sliced_w2(source.reshape(-1, 3) / 255.0, ref_pixels)
    rows.append(["source itself (no transfer)", _spurious_edges(source, source), base, "", ""])
    with tempfile.TemporaryDirectory() as tmp:
        src, ref = Path(tmp) / "src.png", Path(tmp) / "ref.png"
        Image.fromarray(source).save(src)
        Image.fromarray(reference).save(ref)
        extra_quick = ["-n", "1000", "-m", "32"] if quick else []
        for label, extra in (
            ("**skot color-transfer (defaults)**", []),
            ("skot color-transfer --hard", ["--hard"]),
        ):
            out = Path(tmp) / "out.png"
            runs = [_cli(src, ref, out, extra_quick + extra) for _ in range(repeats)]
            wall, err = min(runs, key=lambda r: r[0])
            img = np.asarray(Image.open(out))
            images[label] = img
            fit_s, steps, tv, total = (_field(err, pattern) for pattern in _VERBOSE)
            note = (
                f"fit {fit_s} s, {steps} steps, marginal error {tv}, command total {total} s; "
                "walls " + ", ".join(f"{r[0]:.1f}" for r in runs) + " s"
            )
            rows.append(
                [
                    label,
                    _spurious_edges(source, img),
                    sliced_w2(img.reshape(-1, 3) / 255.0, ref_pixels),
                    f"{wall:.2f}",
                    note,
                ]
            )
        video_rows, video = _video(
            tmp, ref, frame_sequence(source, 3 if quick else 10, pan=1 if quick else 6), extra_quick
        )
    for n_samples in (500, 1000) if not quick else (200,):
        best = None
        for _ in range(repeats):
            t = time.perf_counter()
            img, fit_s, map_s = pot_sinkhorn_transfer(source, reference, n_samples)
            wall = time.perf_counter() - t
            if best is None or wall < best[0]:
                best = (wall, fit_s, map_s, img)
        wall, fit_s, map_s, img = best
        label = f"POT SinkhornTransport(reg_e=0.1), {n_samples} samples"
        images[label] = img
        rows.append(
            [
                label,
                _spurious_edges(source, img),
                sliced_w2(img.reshape(-1, 3) / 255.0, ref_pixels),
                f"{wall:.2f}",
                f"fit {fit_s:.2f} s, transform {map_s:.2f} s (in process, images in memory)",
            ]
        )
    fig = _figure(images, fig_dir, quick)
    default, hard = rows[1], rows[2]
    pot_best = min(r[1] for r in rows[3:])
    wall = float(default[3])
    targets = (
        "**Targets (issue 18):** spurious-edge score of the default no higher than POT's "
        f"Sinkhorn mapping: {default[1]:.4f} against {pot_best:.4f} "
        f"({'met' if default[1] <= pot_best else 'missed'}; the hard map scores "
        f"{hard[1]:.4f}); the full image in under 5 s end to end: {wall:.2f} s "
        f"({'met' if wall < 5 else 'missed'}).\n\n"
    )
    intro = __doc__.split("\n\n", 1)[1].replace("\n", " ").strip() + (
        " skot runs as `python -m skot color-transfer SRC REF OUT -v` with one torch thread "
        "(`OMP_NUM_THREADS=1`), its wall time includes starting Python and importing torch; "
        "POT's time is in process (fit and transform only), with the settings of its "
        "colour-transfer example (reg_e=0.1 on [0, 1] colours), 500 and 1,000 samples.\n\n"
    )
    video_text = (
        f"### Video: {video['frames']} frames\n\n"
        "A directory of frames (`python -m skot color-transfer FRAMES/ REF OUT_DIR/`): the "
        "first frame is fitted cold, each next one warm from the previous frame's map (same "
        "reference colours, same sampled pixel positions). The frames are the source panned "
        "6 pixels and darkened by 1.5% of its colour values per frame. Each frame is also "
        "transferred alone by the single-image command (a cold fit); its frame time is the "
        "command's total less its imports. Median frame time after the first: "
        f"**{video['warm']:.2f} s warm against {video['cold']:.2f} s cold** (first frame "
        f"{video['first']:.2f} s); the whole directory command took {video['wall']:.1f} s "
        "from the shell.\n\n"
        + md_table(
            ["frame", "directory command (warm after the first)", "alone (cold)"], video_rows
        )
    )
    head = section_header("Colour transfer", quick, time.perf_counter() - start, load)
    table = md_table(
        ["method", "spurious edges", "sliced W2 to reference", "wall (s)", "notes"], rows
    )
    figure = f"\n![colour transfer]({fig})\n" if fig else ""
    return head + intro + targets + table + figure + "\n" + video_text


def _figure(images, fig_dir, quick):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    names = list(images)
    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 4.6))
    h, w = images["source"].shape[:2]
    crop = (slice(0, h * 200 // 427), slice(w * 250 // 640, w * 550 // 640))  # the sky
    for k, name in enumerate(names):
        for row, view in enumerate((images[name], images[name][crop])):
            axes[row, k].imshow(view, interpolation="nearest")
            axes[row, k].axis("off")
        axes[0, k].set_title(name.replace("**", "").replace(", ", ",\n", 1), fontsize=8)
    fig.tight_layout()
    name = "benchmarks_color_transfer.png"
    fig.savefig(Path(fig_dir) / name, dpi=80 if quick else 100)
    plt.close(fig)
    return name
