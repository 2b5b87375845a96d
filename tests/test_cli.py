import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_deep_prior.cli import main
from napari_deep_prior.io import read_history_tiff

FAST = ["--iterations", "20", "--history-every", "5", "-q"]


@pytest.fixture
def noisy_png(tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:40]
    clean = (120 + 80 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.uint8)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "clean.png", clean)
    iio.imwrite(tmp_path / "noisy.png", noisy)
    return tmp_path


def test_denoise_png_with_history_and_reference(noisy_png, capsys):
    d = noisy_png
    rc = main(
        [
            "denoise",
            str(d / "noisy.png"),
            "-o",
            str(d / "out.png"),
            "--history",
            str(d / "h.tif"),
            "--reference",
            str(d / "clean.png"),
            *FAST,
        ]
    )
    assert rc == 0
    out = iio.imread(d / "out.png")
    assert out.shape == (32, 40) and out.dtype == np.uint8
    frames, its, losses = read_history_tiff(d / "h.tif")
    # --history-every is the longest spacing: a run of 20 iterations keeps at least 10 frames
    assert frames.shape == (10, 32, 40) and its == list(range(2, 21, 2)) and len(losses) == 10
    text = capsys.readouterr().out
    assert "PSNR" in text and "SSIM" in text and "dB ->" in text


def test_inpaint_16bit_with_inverted_mask(tmp_path):
    img = (np.random.default_rng(1).random((32, 32)) * 60000).astype(np.uint16)
    known = np.full((32, 32), 255, np.uint8)
    known[10:15, 10:20] = 0  # 255 = known, 0 = hole: the reference masks' convention
    iio.imwrite(tmp_path / "img.png", img)
    iio.imwrite(tmp_path / "mask.png", known)
    rc = main(
        [
            "inpaint",
            str(tmp_path / "img.png"),
            "--mask",
            str(tmp_path / "mask.png"),
            "--invert-mask",
            "-o",
            str(tmp_path / "out.png"),
            *FAST,
        ]
    )
    assert rc == 0
    out = iio.imread(tmp_path / "out.png")
    assert out.dtype == np.uint16 and out.shape == img.shape
    np.testing.assert_array_equal(out[known > 0], img[known > 0])


def test_float_tiff_stack_round_trip(tmp_path):
    stack = np.random.default_rng(2).random((2, 24, 24)).astype(np.float32) * 5 - 1
    tifffile.imwrite(tmp_path / "s.tif", stack)
    assert main(["denoise", str(tmp_path / "s.tif"), "-o", str(tmp_path / "o.tif"), *FAST]) == 0
    out = tifffile.imread(tmp_path / "o.tif")
    assert out.shape == stack.shape and out.dtype == np.float32


@pytest.mark.parametrize(
    "args, msg",
    [
        (["denoise", "{d}/missing.png", "-o", "{d}/o.png"], "no such image file"),
        (["denoise", "{d}/noisy.png", "-o", "{d}/o.bmp"], "unsupported file type .bmp"),
        (["denoise", "{d}/noisy.png", "-o", "{d}/o.png", "--iterations", "0"], "iterations must be a positive"),
        (["denoise", "{d}/noisy.png", "-o", "{d}/o.png", "--history", "{d}/h.png"], "multi-page TIFF"),
        (["denoise", "{d}/noisy.png", "-o", "{d}/o.png", "--device", "cuda:7"], "cuda"),
        (["inpaint", "{d}/noisy.png", "--mask", "{d}/small.png", "-o", "{d}/o.png"], "mask has shape (8, 8)"),
        (["inpaint", "{d}/noisy.png", "--mask", "{d}/zeros.png", "-o", "{d}/o.png"], "marks no pixel to fill"),
    ],
)
def test_bad_input_exits_2_with_one_line(noisy_png, capsys, args, msg):
    d = noisy_png
    iio.imwrite(d / "small.png", np.full((8, 8), 255, np.uint8))
    iio.imwrite(d / "zeros.png", np.zeros((32, 40), np.uint8))
    rc = main([a.format(d=d) for a in args] + ["-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert msg in err and err.startswith("napari-deep-prior: error:")
    assert err.strip().count("\n") == 0


def test_16bit_colour_png_output_is_refused(tmp_path, capsys):
    img = (np.random.default_rng(1).random((24, 24, 3)) * 60000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", img, photometric="rgb")
    rc = main(["denoise", str(tmp_path / "c.tif"), "-o", str(tmp_path / "o.png"), *FAST])
    assert rc == 2 and "write a .tif" in capsys.readouterr().err
    assert main(["denoise", str(tmp_path / "c.tif"), "-o", str(tmp_path / "o.tif"), *FAST]) == 0
    assert tifffile.imread(tmp_path / "o.tif").dtype == np.uint16


def test_float_result_to_png_is_refused(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "f.tif", np.random.default_rng(0).random((24, 24)).astype(np.float32))
    rc = main(["denoise", str(tmp_path / "f.tif"), "-o", str(tmp_path / "o.png"), *FAST])
    assert rc == 2 and "write a .tif" in capsys.readouterr().err


def test_poisson_counts_give_float_rates_and_dtype_input_the_counts(tmp_path, capsys, monkeypatch):
    import napari_deep_prior.restore.api as api

    counts = np.random.default_rng(3).poisson(8.0, (24, 24)).astype(np.uint16)
    iio.imwrite(tmp_path / "c.png", counts)
    # the float32 rates cannot go to a PNG: refused before any fitting
    started = []
    monkeypatch.setattr(api.DIPJob, "steps", lambda self: started.append(1))
    rc = main(["denoise", str(tmp_path / "c.png"), "--loss", "poisson", "-o", str(tmp_path / "o.png"), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "--dtype input" in err and "float32" in err and not started
    assert not (tmp_path / "o.png").exists()
    monkeypatch.undo()
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "c.png"),
                "--loss",
                "poisson",
                "-o",
                str(tmp_path / "o.tif"),
                "--history",
                str(tmp_path / "h.tif"),
                *FAST,
            ]
        )
        == 0
    )
    assert tifffile.imread(tmp_path / "o.tif").dtype == np.float32
    assert read_history_tiff(tmp_path / "h.tif")[0].dtype == np.float32
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "c.png"),
                "--loss",
                "poisson",
                "--dtype",
                "input",
                "-o",
                str(tmp_path / "o.png"),
                *FAST,
            ]
        )
        == 0
    )
    assert iio.imread(tmp_path / "o.png").dtype == np.uint16
    assert main(["denoise", str(tmp_path / "c.png"), "--dtype", "complex", "-o", str(tmp_path / "x.tif"), *FAST]) == 2
    assert "--dtype 'complex' is not supported" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["inpaint", "x.png", "-o", "y.png"])  # --mask is required
    assert exc.value.code == 2


def test_demo_writes_result_and_reports_psnr(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "-o", str(out), "--size", "48", "--iterations", "30", "-q"]) == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "->" in text
    assert iio.imread(out).shape == (48, 48, 3)
    assert (tmp_path / "demo_noisy.png").exists()


def test_colorize_levin_from_hints_csv(tmp_path, capsys):
    grey = np.tile(np.linspace(40, 200, 48).astype(np.uint8), (40, 1))
    iio.imwrite(tmp_path / "grey.png", grey)
    (tmp_path / "hints.csv").write_text("row,col,color\n10,5,#c03020\n30,40,#2040c0\n")
    rc = main(
        [
            "colorize",
            str(tmp_path / "grey.png"),
            "-o",
            str(tmp_path / "c.png"),
            "--method",
            "levin",
            "--hints",
            str(tmp_path / "hints.csv"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    rgb = iio.imread(tmp_path / "c.png")
    assert rgb.shape == (40, 48, 3) and rgb.dtype == np.uint8
    assert rgb[10, 5, 0] > rgb[10, 5, 2]  # red hint stays reddish
    assert rgb[30, 40, 2] > rgb[30, 40, 0]  # blue hint stays bluish
    assert "from 2 hints" in capsys.readouterr().out


def test_colorize_errors_exit_2(tmp_path, capsys, monkeypatch):
    iio.imwrite(tmp_path / "grey.png", np.full((24, 24), 100, np.uint8))
    rc = main(["colorize", str(tmp_path / "grey.png"), "-o", str(tmp_path / "c.png"), "--method", "levin"])
    assert rc == 2 and "hint" in capsys.readouterr().err
    # no weights anywhere and no network: a one-line message naming the file
    monkeypatch.setenv("NAPARI_DEEP_PRIOR_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from napari_deep_prior.colorization import weights

    def offline(*a, **k):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(weights, "_urlopen", offline)
    rc = main(["colorize", str(tmp_path / "grey.png"), "-o", str(tmp_path / "c.png"), "--method", "eccv16"])
    err = capsys.readouterr().err
    assert rc == 2 and "colorization_release_v2-9b330a0b.pth" in err
    assert err.strip().count("\n") == 0


def test_tiles_with_progress_and_bad_tile_size(tmp_path, capsys):
    img = (np.random.default_rng(3).random((64, 100)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "wide.png", img)
    rc = main(
        [
            "denoise",
            str(tmp_path / "wide.png"),
            "-o",
            str(tmp_path / "o.png"),
            "--tile",
            "64",
            "--tile-overlap",
            "20",
            "--iterations",
            "10",
            "--history-every",
            "5",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert iio.imread(tmp_path / "o.png").shape == (64, 100)
    assert "processing in 2 tiles of 64x64 pixels (overlap at least 20)" in cap.out
    assert "plane 1/1 tile 1/2" in cap.err and "plane 1/1 tile 2/2" in cap.err
    rc = main(["denoise", str(tmp_path / "wide.png"), "-o", str(tmp_path / "o.png"), "--tile", "8", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--tile 8 is too small" in err and err.strip().count("\n") == 0


def test_inpaint_fits_regions_around_small_holes(tmp_path, capsys):
    y, x = np.mgrid[0:192, 0:192]
    img = (120 + 80 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.uint8)
    mask = np.zeros(img.shape, np.uint8)
    mask[20:24, 30:50] = 255
    mask[150:160, 150:156] = 255
    iio.imwrite(tmp_path / "img.png", img)
    iio.imwrite(tmp_path / "mask.png", mask)
    rc = main(
        [
            "inpaint",
            str(tmp_path / "img.png"),
            "--mask",
            str(tmp_path / "mask.png"),
            "-o",
            str(tmp_path / "o.png"),
            "--iterations",
            "10",
            "--history-every",
            "0",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "fitting 2 regions around the holes (" in cap.out and "processing in" not in cap.out
    assert "plane 1/1 region 2/2" in cap.err
    out = iio.imread(tmp_path / "o.png")
    assert np.array_equal(out[mask == 0], img[mask == 0])


def test_ensemble_flag_reaches_the_params_and_bad_values_name_it(noisy_png, capsys, monkeypatch):
    import napari_deep_prior.restore.api as api
    from napari_deep_prior.cli import build_parser

    d = noisy_png
    real, jobs = api.prepare, []
    monkeypatch.setattr(api, "prepare", lambda *a, **k: jobs.append(real(*a, **k)) or jobs[-1])
    args = ["denoise", str(d / "noisy.png"), "-o", str(d / "o.png"), "--iterations", "5", "--history-every", "0", "-q"]
    assert main([*args, "--ensemble", "2"]) == 0
    assert jobs[-1].params.ensemble == 2 and iio.imread(d / "o.png").shape == (32, 40)
    assert main(args) == 0 and jobs[-1].params.ensemble == 1  # default: the preset's, one network
    capsys.readouterr()
    for bad in ("0", "17"):
        assert main([*args, "--ensemble", bad]) == 2
        err = capsys.readouterr().err
        assert f"--ensemble (the number of seeds averaged) must be an integer from 1 to 16, got {bad}" in err
    with pytest.raises(SystemExit) as exc:
        main([*args, "--ensemble", "2.5"])
    assert exc.value.code == 2 and "--ensemble: invalid int value: '2.5'" in capsys.readouterr().err
    # every DIP subcommand has it
    parser = build_parser()
    for task in ("inpaint", "upscale"):
        extra = ["--mask", "m.png"] if task == "inpaint" else []
        assert parser.parse_args([task, "x.png", "-o", "y.png", *extra, "--ensemble", "3"]).ensemble == 3
