"""End-to-end tests of the ``skot`` command line on small generated images."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skot._cli import main

Image = pytest.importorskip("PIL.Image")

# Small and quick: the map need not converge for these tests.
FAST = ["-n", "300", "-m", "24", "--max-iter", "20", "--device", "cpu", "--seed", "0"]


@pytest.fixture
def images(tmp_path):
    """A 24x32 colour gradient (source) and a 20x20 random image (reference)."""
    src = np.zeros((24, 32, 3), np.uint8)
    src[..., 0] = np.linspace(0, 255, 32)[None, :]
    src[..., 1] = np.linspace(0, 255, 24)[:, None]
    src[..., 2] = 60
    ref = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    ref[:10] //= 4  # two colour populations
    Image.fromarray(src).save(tmp_path / "source.png")
    Image.fromarray(ref).save(tmp_path / "reference.png")
    (tmp_path / "text.png").write_text("this is not an image")
    return tmp_path / "source.png", tmp_path / "reference.png", tmp_path


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("skot")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_hard_map_sends_every_pixel_to_a_reference_colour(images, capsys):
    src, ref, tmp = images
    out = tmp / "out.png"
    args = ["color-transfer", str(src), str(ref), str(out), *FAST, "--tol", "1", "--hard"]
    assert main(args) == 0
    assert capsys.readouterr().err == ""  # silent by default when the map converges
    result = np.asarray(Image.open(out))
    assert result.shape == (24, 32, 3)
    # The hard map sends every pixel (not only the sampled ones) to a reference colour.
    ref_colours = {tuple(c) for c in np.asarray(Image.open(ref)).reshape(-1, 3)}
    out_colours = {tuple(c) for c in result.reshape(-1, 3)}
    assert out_colours <= ref_colours
    assert len(out_colours) > 5


def test_unconverged_map_warns_on_one_line(images, capsys):
    src, ref, tmp = images
    out = tmp / "out.png"
    args = ["color-transfer", str(src), str(ref), str(out), *FAST, "--max-iter", "2"]
    args += ["--tol", "0"]
    assert main(args) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("skot: warning: the map did not reach --tol 0")
    assert out.exists()


def test_color_transfer_is_reproducible_with_a_seed(images):
    src, ref, tmp = images
    for name in ("a.png", "b.png"):
        assert main(["color-transfer", str(src), str(ref), str(tmp / name), *FAST]) == 0
    a, b = (np.asarray(Image.open(tmp / name)) for name in ("a.png", "b.png"))
    np.testing.assert_array_equal(a, b)


def test_progress_bar_does_not_change_the_result(images):
    src, ref, tmp = images
    base = ["color-transfer", str(src), str(ref)]
    assert main([*base, str(tmp / "a.png"), *FAST, "--progress"]) == 0
    assert main([*base, str(tmp / "b.png"), *FAST, "--no-progress"]) == 0
    a, b = (np.asarray(Image.open(tmp / name)) for name in ("a.png", "b.png"))
    np.testing.assert_array_equal(a, b)


def test_verbose_and_progress_go_to_stderr(images, capsys):
    src, ref, tmp = images
    out = tmp / "out.jpg"  # another format, by extension
    args = ["color-transfer", str(src), str(ref), str(out), *FAST, "-v", "--progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "fitting on 300 source pixels onto 24 reference pixels" in err
    assert "guided-filter smoothing, radius 4" in err
    assert "/20" in err and "marginal error" in err  # tqdm's bar or the plain line
    assert "mapped 768 pixels" in err
    assert Image.open(out).format == "JPEG"


def test_smooth_map_and_grayscale_source(images):
    src, ref, tmp = images
    gray = tmp / "gray.png"
    Image.open(src).convert("L").save(gray)
    out = tmp / "out.png"
    args = ["color-transfer", str(gray), str(ref), str(out), *FAST, "--epsilon", "0.05"]
    assert main(args) == 0
    result = np.asarray(Image.open(out))
    assert result.shape == (24, 32, 3)


def test_existing_output_needs_force(images, capsys):
    src, ref, tmp = images
    out = tmp / "out.png"
    out.write_bytes(b"precious")
    assert main(["color-transfer", str(src), str(ref), str(out), *FAST]) == 1
    _one_error_line(capsys, "already exists", "--force")
    assert out.read_bytes() == b"precious"
    assert main(["color-transfer", str(src), str(ref), str(out), *FAST, "--force"]) == 0
    assert np.asarray(Image.open(out)).shape == (24, 32, 3)


@pytest.mark.parametrize(
    "which, bad, words",
    [
        ("source", "missing.png", ["SOURCE_IMAGE", "missing.png", "no such file"]),
        ("reference", "missing.png", ["REFERENCE_IMAGE", "no such file"]),
        ("source", "text.png", ["SOURCE_IMAGE", "text.png", "not an image"]),
        ("reference", "text.png", ["REFERENCE_IMAGE", "not an image"]),
        ("source", ".", ["SOURCE_IMAGE", "directory"]),
    ],
)
def test_bad_inputs_give_one_error_line(images, capsys, which, bad, words):
    src, ref, tmp = images
    paths = {"source": str(src), "reference": str(ref)}
    paths[which] = str(tmp / bad)
    out = tmp / "out.png"
    assert main(["color-transfer", paths["source"], paths["reference"], str(out), *FAST]) == 1
    _one_error_line(capsys, *words)
    assert not out.exists()


def test_truncated_image_gives_one_error_line(images, capsys):
    src, ref, tmp = images
    broken = tmp / "broken.png"
    data = src.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    assert main(["color-transfer", str(broken), str(ref), str(tmp / "o.png"), *FAST]) == 1
    _one_error_line(capsys, "SOURCE_IMAGE", "broken.png")


@pytest.mark.parametrize(
    "output, words",
    [
        ("no_such_dir/out.png", ["does not exist"]),
        ("text.png/out.png", ["not a directory"]),
        ("out.unknownext", ["unknown image extension", ".unknownext"]),
        ("out", ["unknown image extension"]),
        (".", ["directory"]),
    ],
)
def test_unwritable_outputs_give_one_error_line(images, capsys, output, words):
    src, ref, tmp = images
    assert main(["color-transfer", str(src), str(ref), str(tmp / output), *FAST]) == 1
    _one_error_line(capsys, "cannot write output", *words)


def test_failed_write_gives_one_error_line(images, capsys):
    # The checks before fitting pass, the write itself fails (a full device).
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is not available on this system")
    src, ref, tmp = images
    out = tmp / "full.png"
    out.symlink_to("/dev/full")
    assert main(["color-transfer", str(src), str(ref), str(out), *FAST, "--force"]) == 1
    _one_error_line(capsys, "cannot write output", "full.png")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere"
)
def test_read_only_directory_gives_one_error_line(images, capsys):
    src, ref, tmp = images
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["color-transfer", str(src), str(ref), str(locked / "o.png"), *FAST]) == 1
    finally:
        locked.chmod(0o700)
    _one_error_line(capsys, "permission denied")


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--device", "tpu"], ["--device", "tpu"]),
        (["--sample-size", "0"], ["--sample-size", "positive integer"]),
        (["--reference-size", "many"], ["--reference-size", "many"]),
        (["--tol", "-1"], ["--tol"]),
        (["--height", "tree"], ["--height", "tree"]),
        (["--progress", "--no-progress"], ["not allowed"]),
    ],
)
def test_bad_options_give_one_error_line(images, capsys, extra, words):
    src, ref, tmp = images
    status = main(["color-transfer", str(src), str(ref), str(tmp / "o.png"), *FAST, *extra])
    assert status == 2
    _one_error_line(capsys, *words)
    assert not (tmp / "o.png").exists()


def test_usage_errors(capsys):
    assert main([]) == 2
    _one_error_line(capsys, "command is required")
    assert main(["color-transfer"]) == 2
    _one_error_line(capsys, "SOURCE_IMAGE", "required")
    assert main(["recolour"]) == 2
    _one_error_line(capsys, "recolour")


def test_help_and_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("skot ")
    assert main(["color-transfer", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--sample-size", "--device", "--seed", "--verbose", "--progress", "--force"):
        assert option in out


def test_single_colour_reference_is_refused(images, capsys):
    src, _, tmp = images
    flat = tmp / "flat.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(flat)
    assert main(["color-transfer", str(src), str(flat), str(tmp / "o.png"), *FAST]) == 1
    _one_error_line(capsys, "single colour", "RGB 10, 200, 30", "64 pixels")


def test_one_reference_pixel_says_what_was_sampled(images, capsys):
    # -m 1 keeps one reference pixel: the message says so, not that the image has one colour.
    src, ref, tmp = images
    n_colours = len({tuple(c) for c in np.asarray(Image.open(ref)).reshape(-1, 3)})
    args = ["color-transfer", str(src), str(ref), str(tmp / "o.png"), *FAST, "-m", "1"]
    assert main(args) == 2
    line = _one_error_line(capsys, "--reference-size 1", f"{n_colours} distinct colours")
    assert "has a single colour" not in line
    assert not (tmp / "o.png").exists()


def test_sampled_reference_pixels_of_one_colour_are_named(images, capsys):
    # A reference that is one colour but for a single pixel: two sampled pixels share it.
    src, _, tmp = images
    almost = np.zeros((20, 20, 3), np.uint8)
    almost[0, 0] = 255
    Image.fromarray(almost).save(tmp / "almost.png")
    args = ["color-transfer", str(src), str(tmp / "almost.png"), str(tmp / "o.png"), *FAST]
    assert main([*args, "-m", "2"]) == 1
    _one_error_line(capsys, "the 2 reference pixels sampled", "REFERENCE_IMAGE has 2")
    assert main([*args, "-m", "400", "--tol", "1"]) == 0  # all of them: both colours


def _noisy_gradient(tmp):
    """A smooth seeded image with weak noise (like a sky in a JPEG) and one sharp edge."""
    rng = np.random.default_rng(0)
    h, w = 48, 64
    img = np.zeros((h, w, 3))
    img[..., 0] = np.linspace(0.2, 0.8, w)[None, :]
    img[..., 1] = np.linspace(0.3, 0.7, h)[:, None]
    img[..., 2] = 0.6
    img[:, 40:] *= 0.5  # one real edge
    img += rng.normal(0, 0.004, img.shape)
    source = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    Image.fromarray(source).save(tmp / "sky.png")
    return source, tmp / "sky.png"


def test_default_output_adds_no_edges_and_hard_does(images):
    from skot._cli import _spurious_edges

    _, ref, tmp = images
    source, sky = _noisy_gradient(tmp)
    base = ["color-transfer", str(sky), str(ref)]
    opts = ["-n", "2000", "-m", "48", "--device", "cpu", "--seed", "0", "--tol", "0.1"]
    assert main([*base, str(tmp / "smooth.png"), *opts]) == 0
    assert main([*base, str(tmp / "hard.png"), *opts, "--hard"]) == 0
    smooth = np.asarray(Image.open(tmp / "smooth.png"))
    hard = np.asarray(Image.open(tmp / "hard.png"))
    assert _spurious_edges(source, source) == 0.0
    assert _spurious_edges(source, hard) > 0.05  # the palette's steps show in the gradient
    assert _spurious_edges(source, smooth) < 0.005
    # Smoothing the colour change keeps the transfer: the output is still far from the
    # source and near the hard map on average.
    assert np.abs(smooth / 255.0 - source / 255.0).mean() > 0.1
    assert np.abs(smooth / 255.0 - hard / 255.0).mean() < 0.1
    # The real edge survives: the output's step across column 40 stays sharp.
    assert np.abs(np.diff(smooth.astype(float), axis=1))[:, 39].mean() > 10


def test_guided_filter_is_edge_aware_and_exact_on_constants():
    from skot._cli import _guided_filter

    rng = np.random.default_rng(0)
    guide = np.zeros((40, 40, 3), np.float32)
    guide[:, 20:] = 1.0
    guide += rng.normal(0, 0.002, guide.shape).astype(np.float32)
    for subsample in (1, 2):
        # A constant is kept; a step that follows the guide's edge is kept too.
        const = np.full((40, 40, 2), 0.3, np.float32)
        out = _guided_filter(guide, const, 6, 1e-2, subsample)
        np.testing.assert_allclose(out, const, atol=1e-4)
        step = np.where(guide[..., :1] > 0.5, 0.8, 0.1).astype(np.float32)
        out = _guided_filter(guide, step, 6, 1e-2, subsample)
        assert np.abs(out - step).max() < 0.05
        # Noise where the guide is flat is smoothed away.
        noise = rng.normal(0, 0.1, (40, 40, 1)).astype(np.float32)
        out = _guided_filter(guide, noise, 6, 1e-2, subsample)
        assert out[8:32, 4:16].std() < 0.3 * noise.std()


def test_missing_pillow_gives_one_error_line(images, capsys, monkeypatch):
    src, ref, tmp = images
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert main(["color-transfer", str(src), str(ref), str(tmp / "o.png"), *FAST]) == 1
    _one_error_line(capsys, "Pillow", "skot[image]")


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "skot", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_python_dash_m_end_to_end(images):
    src, ref, tmp = images
    out = tmp / "sub.png"
    ok = _run("color-transfer", str(src), str(ref), str(out), *FAST)
    assert ok.returncode == 0, ok.stderr
    assert np.asarray(Image.open(out)).shape == (24, 32, 3)
    missing = _run("color-transfer", str(tmp / "nope.png"), str(ref), str(tmp / "x.png"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"skot: error: cannot read SOURCE_IMAGE '{tmp / 'nope.png'}': no such file"
    )
    assert "Traceback" not in missing.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("skot")
    if not script.exists():
        pytest.skip("the skot console script is not installed next to this Python")
    res = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert res.returncode == 0
    assert res.stdout.startswith("skot ")


@pytest.mark.slow
def test_default_settings_reach_tol_on_the_sample_images(tmp_path, capsys):
    # The defaults must reach their own --tol on scikit-learn's sample photographs (a
    # warning line would say otherwise): measured 423 steps of at most 1000, error 0.0474.
    images = Path(pytest.importorskip("sklearn.datasets").__file__).parent / "images"
    out = tmp_path / "out.png"
    args = [str(images / "china.jpg"), str(images / "flower.jpg"), str(out), "--device", "cpu"]
    assert main(["color-transfer", *args, "-v", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err
    assert "(converged)" in err, err
    assert np.asarray(Image.open(out)).shape == (427, 640, 3)


def test_directory_of_frames_fits_the_first_cold_and_the_next_warm(images, capsys):
    src, ref, tmp = images
    frames, outs = tmp / "frames", tmp / "outs"
    frames.mkdir()
    base = np.asarray(Image.open(src)).astype(np.int16)
    for k in range(3):  # the source panned and darkened frame by frame
        frame = np.clip(np.roll(base, 2 * k, axis=1) - 6 * k, 0, 255).astype(np.uint8)
        Image.fromarray(frame).save(frames / f"frame{k}.png")
    (frames / "notes.txt").write_text("not a frame")
    args = ["color-transfer", str(frames), str(ref), str(outs), *FAST, "--tol", "0.5", "-v"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert sorted(p.name for p in outs.iterdir()) == ["frame0.png", "frame1.png", "frame2.png"]
    assert "3 frames of" in err
    assert "frame 1/3" in err and "(cold)" in err
    assert "frame 2/3" in err and "frame 3/3" in err and err.count("(warm)") == 2
    # The first frame's output is the single-image command's.
    single = tmp / "single.png"
    one = [
        "color-transfer",
        str(frames / "frame0.png"),
        str(ref),
        str(single),
        *FAST,
        "--tol",
        "0.5",
    ]
    assert main(one) == 0
    assert np.array_equal(
        np.asarray(Image.open(single)), np.asarray(Image.open(outs / "frame0.png"))
    )
    # Existing outputs need --force, checked before any work.
    assert main(args) == 1
    _one_error_line(capsys, "already exists", "--force")


@pytest.mark.parametrize(
    "output, words",
    [("out.png", ["directory of frames", "must be a directory"]), (".", ["overwrite"])],
)
def test_directory_of_frames_needs_an_output_directory(images, capsys, output, words):
    src, ref, tmp = images
    frames = tmp / "frames"
    frames.mkdir()
    Image.open(src).save(frames / "a.png")
    out = frames if output == "." else tmp / output
    assert main(["color-transfer", str(frames), str(ref), str(out), *FAST]) == 1
    _one_error_line(capsys, *words)
    assert sorted(p.name for p in frames.iterdir()) == ["a.png"]


def test_directory_without_images_is_named(images, capsys):
    src, ref, tmp = images
    (tmp / "empty").mkdir()
    assert main(["color-transfer", str(tmp / "empty"), str(ref), str(tmp / "o"), *FAST]) == 1
    _one_error_line(capsys, "without images")


def test_console_lets_idle_openmp_threads_sleep_unless_told_otherwise(monkeypatch):
    import skot._cli as cli

    ended = []
    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.setattr(cli.os, "_exit", ended.append)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    cli.console()
    assert ended == [0] and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stands
    cli.console()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
