"""The batch form of the command line: several inputs (files, folders, globs), --out-dir and --name,
--skip-existing / --overwrite, per-file failures and the summary, checks before the first fit.

Real files in tmp_path, tiny images and 3 iterations: every run is a real (short) fit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from child_signals import SIGINT_DEFAULT
from napari_deep_prior import cli
from napari_deep_prior.io import read_history_tiff, read_image, read_image_meta, write_image

FAST = ["--iterations", "3", "--history-every", "0", "-q"]


def _grey(seed: int, shape=(24, 24)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    clean = 120 + 60 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    return np.clip(clean + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)


@pytest.fixture
def raw(tmp_path) -> Path:
    """tmp_path/raw holding a.png, b.png, c.png (24x24 grey uint8)."""
    d = tmp_path / "raw"
    d.mkdir()
    for i, name in enumerate("abc"):
        iio.imwrite(d / f"{name}.png", _grey(i))
    return d


@pytest.fixture
def fits(monkeypatch):
    """The inputs whose fit started (the CLI runs every job through cli._run_job)."""
    started = []
    real = cli._run_job

    def spy(job, quiet):
        started.append(job)
        return real(job, quiet)

    monkeypatch.setattr(cli, "_run_job", spy)
    return started


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# -- what is processed ---------------------------------------------------------------------------


def test_glob_of_three_files_writes_three_results(raw, tmp_path, capsys, one_torch_thread):
    rc, out, err = _run(capsys, "denoise", f"{raw}/*.png", "--out-dir", tmp_path / "clean", *FAST)
    assert rc == 0, err
    for i, name in enumerate("abc"):
        result = iio.imread(tmp_path / "clean" / f"{name}.png")
        assert result.shape == (24, 24) and result.dtype == np.uint8
        assert not np.array_equal(result, _grey(i))  # fitted, not copied
        assert f"[{i + 1}/3] {raw / name}.png" in out
    assert "3 done, 0 skipped, 0 failed in 0:" in out
    assert "failed:" not in err


def test_folder_input_takes_its_images_and_a_zarr_as_one_image(raw, tmp_path, capsys, one_torch_thread):
    pytest.importorskip("zarr")
    write_image(raw / "z.zarr", _grey(7), None)  # an OME-Zarr image is a folder: one input, not expanded
    iio.imwrite(raw / ".hidden.png", _grey(8))  # hidden: left out
    (raw / "notes.txt").write_text("not an image")  # not read by its suffix: left out
    (raw / "sub").mkdir()
    iio.imwrite(raw / "sub" / "deep.png", _grey(9))  # a folder is not searched below its own level
    rc, out, err = _run(capsys, "denoise", raw, "--out-dir", tmp_path / "clean", *FAST)
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["a.png", "b.png", "c.png", "z.zarr"]
    assert read_image(tmp_path / "clean" / "z.zarr").shape == (24, 24)
    assert "[4/4]" in out and "4 done, 0 skipped, 0 failed" in out


def test_recursive_glob_and_duplicates_processed_once(raw, tmp_path, capsys, one_torch_thread, fits):
    (raw / "sub").mkdir()
    iio.imwrite(raw / "sub" / "d.png", _grey(4))
    # a.png three times: by name, through "..", and by the pattern
    rc, out, err = _run(
        capsys,
        "denoise",
        raw / "a.png",
        raw / "sub" / ".." / "a.png",
        f"{raw}/**/*.png",
        "--out-dir",
        tmp_path / "clean",
        *FAST,
    )
    assert rc == 0, err
    assert len(fits) == 4 and "[4/4]" in out and "4 done" in out
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["a.png", "b.png", "c.png", "d.png"]


def test_name_pattern_with_task_and_format(raw, tmp_path, capsys, one_torch_thread):
    rc, out, err = _run(
        capsys, "denoise", f"{raw}/*.png", "--out-dir", tmp_path / "clean", "--name", "{stem}_{task}.tif", *FAST
    )
    assert rc == 0, err
    for name in "abc":
        result = tifffile.imread(tmp_path / "clean" / f"{name}_denoise.tif")
        assert result.shape == (24, 24) and result.dtype == np.uint8


def test_ome_double_suffix_is_one_suffix(tmp_path, capsys, one_torch_thread):
    tifffile.imwrite(tmp_path / "a.ome.tif", _grey(0), ome=True)
    rc, out, err = _run(
        capsys, "denoise", tmp_path / "a.ome.tif", "--out-dir", tmp_path / "o", "--name", "{stem}_x{suffix}", *FAST
    )
    assert rc == 0, err
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["a_x.ome.tif"]
    assert read_image_meta(tmp_path / "o" / "a_x.ome.tif").kind == "ome"


def test_out_dir_is_created_with_its_parents(raw, tmp_path, capsys, one_torch_thread):
    rc, out, err = _run(capsys, "denoise", raw / "a.png", "--out-dir", tmp_path / "new" / "deeper", *FAST)
    assert rc == 0, err
    assert (tmp_path / "new" / "deeper" / "a.png").is_file()
    assert "1 done, 0 skipped, 0 failed" in out


# -- failures of one file: reported, the batch goes on ---------------------------------------------


def test_corrupt_file_is_reported_and_the_others_are_written(raw, tmp_path, capsys, one_torch_thread):
    (raw / "bad.png").write_bytes(np.random.default_rng(0).bytes(500))  # random bytes with an image's name
    rc, out, err = _run(capsys, "denoise", raw, "--out-dir", tmp_path / "clean", *FAST)
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["a.png", "b.png", "c.png"]
    assert f"failed: {raw / 'bad.png'}: " in err and "is not a PNG image" in err
    assert "3 done, 0 skipped, 1 failed in " in out
    # reported when it happens and again in the list after the summary, one line each time
    assert err.count(f"failed: {raw / 'bad.png'}") == 2 and "Traceback" not in err
    assert not list((tmp_path / "clean").glob(".*"))  # no temporary file left


def test_corrupt_tif_among_tifs(tmp_path, capsys, one_torch_thread):
    d = tmp_path / "raw"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", _grey(0))
    (d / "b.tif").write_bytes(np.random.default_rng(1).bytes(400))
    tifffile.imwrite(d / "c.tif", _grey(2))
    rc, out, err = _run(capsys, "denoise", f"{d}/*.tif", "--out-dir", tmp_path / "clean", *FAST)
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["a.tif", "c.tif"]
    assert f"failed: {d / 'b.tif'}: " in err and "not a readable TIFF" in err
    assert "2 done, 0 skipped, 1 failed" in out


def test_an_error_in_one_fit_fails_that_file_only(raw, tmp_path, capsys, one_torch_thread, monkeypatch):
    real = cli._run_job
    calls = []

    def second_runs_out_of_memory(job, quiet):
        calls.append(job)
        if len(calls) == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
        return real(job, quiet)

    monkeypatch.setattr(cli, "_run_job", second_runs_out_of_memory)
    rc, out, err = _run(capsys, "denoise", f"{raw}/*.png", "--out-dir", tmp_path / "clean", *FAST)
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["a.png", "c.png"]
    assert f"failed: {raw / 'b.png'}: ran out of memory" in err and "--tile" in err
    assert "2 done, 0 skipped, 1 failed" in out


def test_a_wrong_shape_mask_fails_that_file_only(raw, tmp_path, capsys, one_torch_thread):
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in "abc":
        m = np.zeros((24, 24) if name != "b" else (8, 8), np.uint8)
        m[5:9, 5:12] = 255
        iio.imwrite(masks / f"{name}_mask.png", m)
    rc, out, err = _run(
        capsys, "inpaint", raw, "--mask", f"{masks}/{{stem}}_mask.png", "--out-dir", tmp_path / "filled", *FAST
    )
    assert rc == 1
    assert f"failed: {raw / 'b.png'}: " in err and "mask has shape (8, 8)" in err
    assert sorted(p.name for p in (tmp_path / "filled").iterdir()) == ["a.png", "c.png"]


# -- existing results -------------------------------------------------------------------------------


def test_skip_existing_resumes_and_leaves_results_untouched(raw, tmp_path, capsys, one_torch_thread, fits):
    clean = tmp_path / "clean"
    assert _run(capsys, "denoise", raw / "a.png", raw / "b.png", "--out-dir", clean, *FAST)[0] == 0
    time.sleep(0.02)  # a rewrite would show in the mtime
    before = _snapshot(clean)
    fits.clear()
    rc, out, err = _run(capsys, "denoise", f"{raw}/*.png", "--out-dir", clean, "--skip-existing", *FAST)
    assert rc == 0, err
    after = _snapshot(clean)
    assert {k: after[k] for k in before} == before  # bytes and mtime
    assert set(after) == {"a.png", "b.png", "c.png"}
    assert len(fits) == 1  # only c was fitted
    assert f"skipped: {clean / 'a.png'} exists" in out
    assert "1 done, 2 skipped, 0 failed" in out


def test_existing_results_are_refused_before_any_fit(raw, tmp_path, capsys, one_torch_thread, fits):
    clean = tmp_path / "clean"
    clean.mkdir()
    iio.imwrite(clean / "b.png", np.zeros((24, 24), np.uint8))
    before = _snapshot(tmp_path)
    rc, out, err = _run(capsys, "denoise", f"{raw}/*.png", "--out-dir", clean, *FAST)
    assert rc == 2
    assert "--skip-existing" in err and "--overwrite" in err and str(clean / "b.png") in err
    assert err.startswith("napari-deep-prior: error:") and err.count("\n") == 1
    assert not fits and _snapshot(tmp_path) == before


def test_overwrite_replaces_existing_results(raw, tmp_path, capsys, one_torch_thread):
    clean = tmp_path / "clean"
    clean.mkdir()
    iio.imwrite(clean / "b.png", np.zeros((24, 24), np.uint8))
    rc, out, err = _run(capsys, "denoise", f"{raw}/*.png", "--out-dir", clean, "--overwrite", *FAST)
    assert rc == 0, err
    assert iio.imread(clean / "b.png").any()  # the zeros were replaced by the result
    assert "3 done, 0 skipped, 0 failed" in out


def test_skip_existing_redoes_a_result_cut_short_by_ctrl_c(raw, tmp_path, capsys, one_torch_thread, monkeypatch):
    """The first Ctrl-C of a batch keeps the running file's estimate and stops; a re-run with
    --skip-existing redoes that file (its provenance says it was cut short) and the ones not started."""
    clean = tmp_path / "clean"
    real = cli._run_job
    calls = []

    def ctrl_c_on_the_second(job, quiet):
        calls.append(job)
        if len(calls) == 2:  # what _run_job returns after the first Ctrl-C
            return job.result(), True
        return real(job, quiet)

    monkeypatch.setattr(cli, "_run_job", ctrl_c_on_the_second)
    rc, out, err = _run(capsys, "denoise", f"{raw}/*.png", "--out-dir", clean, *FAST)
    assert rc == 130
    assert sorted(p.name for p in clean.iterdir()) == ["a.png", "b.png"]
    assert read_image_meta(clean / "b.png").provenance["interrupted"] is True
    assert "1 done, 0 skipped, 0 failed in 0:0" in out
    assert f"stopped by Ctrl-C at {raw / 'b.png'} (its estimate so far was written); 1 not started" in out
    monkeypatch.setattr(cli, "_run_job", real)
    a_before = _snapshot(clean)["a.png"]
    rc, out, err = _run(capsys, "denoise", f"{raw}/*.png", "--out-dir", clean, "--skip-existing", *FAST)
    assert rc == 0, err
    assert _snapshot(clean)["a.png"] == a_before
    assert read_image_meta(clean / "b.png").provenance["interrupted"] is False
    assert "redone: " in out and "stopped by Ctrl-C" in out  # the note says why b is done again
    assert "2 done, 1 skipped, 0 failed" in out


def test_single_output_with_skip_existing_keeps_it(raw, tmp_path, capsys, one_torch_thread, fits):
    iio.imwrite(tmp_path / "o.png", np.zeros((24, 24), np.uint8))
    before = _snapshot(tmp_path)
    rc, out, err = _run(capsys, "denoise", raw / "a.png", "-o", tmp_path / "o.png", "--skip-existing", *FAST)
    assert rc == 0 and not fits and _snapshot(tmp_path) == before
    assert f"skipped: {tmp_path / 'o.png'} exists" in out


# -- refused before any work: one test per invalid input, each message naming the option ----------


def _refused(capsys, tmp_path, fits, *argv) -> str:
    before = _snapshot(tmp_path)
    rc, out, err = _run(capsys, *argv)
    assert rc == 2, (out, err)
    assert err.startswith("napari-deep-prior: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert not fits, "a fit started before the refusal"
    assert _snapshot(tmp_path) == before, "a refused run changed a file"
    return err


def test_two_inputs_to_the_same_result_are_refused(raw, tmp_path, capsys, fits):
    other = tmp_path / "other"
    other.mkdir()
    iio.imwrite(other / "a.png", _grey(5))
    err = _refused(capsys, tmp_path, fits, "denoise", raw / "a.png", other / "a.png", "--out-dir", tmp_path / "clean")
    assert "would both be written to" in err and "--name" in err and "{parent}" in err
    assert not (tmp_path / "clean").exists()


def test_a_name_without_placeholder_maps_all_inputs_to_one_result(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw, "--out-dir", tmp_path / "c", "--name", "out.png")
    assert "would both be written to" in err and "--name" in err


def test_result_that_is_an_input_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", f"{raw}/*.png", "--out-dir", raw)
    assert "which is the input" in err and "writing there would destroy it" in err and "--out-dir" in err


def test_result_that_is_a_mask_is_refused(raw, tmp_path, capsys, fits):
    iio.imwrite(tmp_path / "m.png", np.full((24, 24), 255, np.uint8))
    err = _refused(
        capsys, tmp_path, fits, "inpaint", raw, "--mask", tmp_path / "m.png", "--out-dir", tmp_path, "--name", "m.png"
    )
    assert "which is --mask" in err


def test_output_with_several_inputs_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", f"{raw}/*.png", "-o", tmp_path / "o.png")
    assert "-o names the result of one input" in err and "--out-dir DIR" in err


def test_output_with_a_folder_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw, "-o", tmp_path / "o.png")
    assert "is a folder, not an image file" in err and "--out-dir" in err


def test_output_and_out_dir_together_are_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw / "a.png", "-o", tmp_path / "o.png", "--out-dir", tmp_path)
    assert "-o FILE" in err and "--out-dir DIR" in err and "not both" in err


def test_several_inputs_without_out_dir_are_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw / "a.png", raw / "b.png")
    assert "2 inputs" in err and "need --out-dir DIR" in err


def test_one_input_without_output_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw / "a.png")
    assert "give -o FILE" in err and "--out-dir" in err


def test_name_with_output_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw / "a.png", "-o", tmp_path / "o.png", "--name", "{stem}.tif")
    assert "--name names the results in --out-dir" in err


def test_pattern_matching_nothing_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", f"{raw}/*.tif", "--out-dir", tmp_path / "clean")
    assert f"the input pattern '{raw}/*.tif' matches no image file" in err
    assert not (tmp_path / "clean").exists()


def test_folder_without_images_is_refused(tmp_path, capsys, fits):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    err = _refused(capsys, tmp_path, fits, "denoise", tmp_path / "empty", "--out-dir", tmp_path / "clean")
    assert "holds no image file" in err


def test_missing_file_among_inputs_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw / "a.png", raw / "zz.png", "--out-dir", tmp_path / "c")
    assert f"no such image file: {raw / 'zz.png'}" in err


def test_unknown_placeholder_in_name_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw, "--out-dir", tmp_path / "c", "--name", "{stme}.png")
    assert "--name '{stme}.png': unknown placeholder {stme}" in err and "{stem}" in err


def test_name_with_a_folder_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw, "--out-dir", tmp_path / "c", "--name", "x/{stem}.png")
    assert "--name 'x/{stem}.png' gives 'x/a.png'" in err and "give a file name" in err


def test_unsupported_result_type_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw, "--out-dir", tmp_path / "c", "--name", "{stem}.bmp")
    assert "unsupported file type .bmp" in err and "--name '{stem}.bmp'" in err
    assert not (tmp_path / "c").exists()  # the folder made for the run is removed with the refusal


def test_format_that_cannot_hold_the_result_is_refused_from_the_header(tmp_path, capsys, fits):
    d = tmp_path / "raw"
    d.mkdir()
    for i in range(2):
        tifffile.imwrite(d / f"f{i}.tif", np.random.default_rng(i).random((24, 24)).astype(np.float32))
    err = _refused(capsys, tmp_path, fits, "denoise", d, "--out-dir", tmp_path / "new" / "c", "--name", "{stem}.png")
    assert f"{d / 'f0.tif'}:" in err and "write a .tif" in err and "--name" in err
    assert not (tmp_path / "new").exists()


def test_history_file_with_several_inputs_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw, "--out-dir", tmp_path / "c", "--history", tmp_path / "h.tif")
    assert "--history" in err and "this run has 3 inputs" in err and "'history/{stem}.tif'" in err


def test_reference_file_with_several_inputs_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw, "--out-dir", tmp_path / "c", "--reference", raw / "a.png")
    assert "--reference" in err and "this run has 3 inputs" in err


def test_history_pattern_to_one_file_is_refused(raw, tmp_path, capsys, fits):
    err = _refused(
        capsys, tmp_path, fits, "denoise", raw, "--out-dir", tmp_path / "c", "--history", f"{tmp_path}/{{task}}.tif"
    )
    assert "would both be written to" in err and "--history" in err


def test_missing_per_file_mask_is_refused(raw, tmp_path, capsys, fits):
    (tmp_path / "masks").mkdir()
    iio.imwrite(tmp_path / "masks" / "a_mask.png", np.full((24, 24), 255, np.uint8))
    err = _refused(
        capsys,
        tmp_path,
        fits,
        "inpaint",
        raw,
        "--mask",
        f"{tmp_path}/masks/{{stem}}_mask.png",
        "--out-dir",
        tmp_path / "c",
    )
    assert f"--mask {tmp_path / 'masks' / 'b_mask.png'} (for {raw / 'b.png'}) does not exist" in err


def test_out_dir_that_is_a_file_is_refused(raw, tmp_path, capsys, fits):
    (tmp_path / "c").write_text("a file")
    err = _refused(capsys, tmp_path, fits, "denoise", raw, "--out-dir", tmp_path / "c")
    assert "--out-dir" in err and "is not a folder" in err


def test_bad_option_is_refused_once_before_any_file(raw, tmp_path, capsys, fits):
    err = _refused(capsys, tmp_path, fits, "denoise", raw, "--out-dir", tmp_path / "c", "--iterations", "0")
    assert "--iterations must be a positive integer" in err
    assert not (tmp_path / "c").exists()


# -- per-file auxiliary files ------------------------------------------------------------------------


def test_inpaint_with_a_mask_per_file(raw, tmp_path, capsys, one_torch_thread):
    masks = tmp_path / "masks"
    masks.mkdir()
    holes = {}
    for i, name in enumerate("abc"):
        m = np.zeros((24, 24), np.uint8)
        m[3 + 5 * i : 7 + 5 * i, 4:16] = 255  # each file its own hole
        iio.imwrite(masks / f"{name}_mask.png", m)
        holes[name] = m > 0
    rc, out, err = _run(
        capsys, "inpaint", raw, "--mask", f"{masks}/{{stem}}_mask.png", "--out-dir", tmp_path / "filled", *FAST
    )
    assert rc == 0, err
    for i, name in enumerate("abc"):
        img, result, hole = _grey(i), iio.imread(tmp_path / "filled" / f"{name}.png"), holes[name]
        np.testing.assert_array_equal(result[~hole], img[~hole])  # its own known pixels kept
        assert not np.array_equal(result[hole], img[hole])  # its own hole filled
        assert read_image_meta(tmp_path / "filled" / f"{name}.png").provenance["mask"] == f"{name}_mask.png"


def test_one_mask_for_every_input(raw, tmp_path, capsys, one_torch_thread):
    m = np.zeros((24, 24), np.uint8)
    m[8:12, 8:12] = 255
    iio.imwrite(tmp_path / "m.png", m)
    rc, out, err = _run(capsys, "inpaint", raw, "--mask", tmp_path / "m.png", "--out-dir", tmp_path / "f", *FAST)
    assert rc == 0, err
    for i, name in enumerate("abc"):
        np.testing.assert_array_equal(iio.imread(tmp_path / "f" / f"{name}.png")[m == 0], _grey(i)[m == 0])


def test_history_and_reference_patterns(raw, tmp_path, capsys, one_torch_thread):
    (tmp_path / "hist").mkdir()
    (tmp_path / "truth").mkdir()
    for name in "abc":
        iio.imwrite(tmp_path / "truth" / f"{name}.png", _grey(10))
    rc, out, err = _run(
        capsys,
        "denoise",
        raw,
        "--out-dir",
        tmp_path / "clean",
        "--history",
        f"{tmp_path}/hist/{{stem}}.tif",
        "--reference",
        f"{tmp_path}/truth/{{stem}}{{suffix}}",
        "--iterations",
        "10",
        "--history-every",
        "1",
        "-q",
    )
    assert rc == 0, err
    for name in "abc":
        frames, its, _ = read_history_tiff(tmp_path / "hist" / f"{name}.tif")
        assert frames.shape == (10, 24, 24) and its == list(range(1, 11))
        assert f"(vs {tmp_path / 'truth' / name}.png)" in out
    assert out.count("PSNR") == 3


# -- colorize in the same driver ---------------------------------------------------------------------


def test_colorize_batch_with_shared_hints(tmp_path, capsys):
    d = tmp_path / "grey"
    d.mkdir()
    for i in range(2):
        iio.imwrite(d / f"g{i}.png", np.tile(np.linspace(40 + i * 10, 200, 32).astype(np.uint8), (24, 1)))
    (tmp_path / "hints.csv").write_text("row,col,color\n5,5,#c03020\n20,28,#2040c0\n")
    rc, out, err = _run(
        capsys,
        "colorize",
        f"{d}/*.png",
        "--out-dir",
        tmp_path / "colour",
        "--name",
        "{stem}_{task}.png",
        "--method",
        "levin",
        "--hints",
        tmp_path / "hints.csv",
    )
    assert rc == 0, err
    for i in range(2):
        rgb = iio.imread(tmp_path / "colour" / f"g{i}_colorize.png")
        assert rgb.shape == (24, 32, 3) and rgb[5, 5, 0] > rgb[5, 5, 2]
    assert "[2/2]" in out and "2 done, 0 skipped, 0 failed" in out


def test_colorize_batch_refuses_existing_results(tmp_path, capsys, fits):
    iio.imwrite(tmp_path / "g.png", np.full((24, 24), 100, np.uint8))
    (tmp_path / "c").mkdir()
    iio.imwrite(tmp_path / "c" / "g.png", np.zeros((24, 24, 3), np.uint8))
    err = _refused(capsys, tmp_path, fits, "colorize", tmp_path / "g.png", "--out-dir", tmp_path / "c")
    assert "--skip-existing" in err


# -- the driver with another runner ------------------------------------------------------------------


def test_run_files_with_a_runner_that_takes_files_ahead(raw, tmp_path, capsys, one_torch_thread):
    """A runner may take several planned files before handing results back, in any order."""
    args = cli.build_parser().parse_args(["denoise", str(raw), "--out-dir", str(tmp_path / "c"), *FAST])
    tasks, batch = cli._file_tasks(args, "denoise", shared={}, per_file={"--reference": None, "--history": None})
    assert batch and [t.output.name for t in tasks] == ["a.png", "b.png", "c.png"]
    (tmp_path / "c").mkdir()
    taken = []

    def two_ahead_reversed(planned, quiet=False):
        planned = iter(planned)
        while True:
            batch_ = [p for _, p in zip(range(2), planned, strict=False)]
            if not batch_:
                return
            taken.append(len(batch_))
            for p in reversed(batch_):
                yield p, p.run(quiet)

    rc = cli.run_files(tasks, lambda t: cli._plan_restore(args, t), batch=True, quiet=True, runner=two_ahead_reversed)
    out = capsys.readouterr().out
    assert rc == 0 and taken == [2, 1]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["a.png", "b.png", "c.png"]
    assert "3 done, 0 skipped, 0 failed" in out


# -- signals in a batch: a real subprocess -----------------------------------------------------------


def _batch_process(d: Path) -> subprocess.Popen:
    for name in ("a", "b"):
        iio.imwrite(d / f"{name}.png", _grey(0, shape=(48, 48)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "napari_deep_prior.cli", "denoise", str(d / "a.png"), str(d / "b.png")]
        + ["--out-dir", str(d / "out"), "--iterations", "100000", "--no-early-stop"]
        + ["--history", str(d / "h_{stem}.tif")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=SIGINT_DEFAULT,
    )


def _wait_for(proc, marker: str, timeout: float = 120.0) -> None:
    seen, t0 = "", time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if marker in line:
            return
    proc.kill()
    raise AssertionError(f"never saw {marker!r}: {seen}")


def test_ctrl_c_stops_the_batch_keeping_the_running_files_estimate(tmp_path):
    """A real SIGINT during the first file's fit: its estimate and history are written, the second
    file is not started, a summary ends the run, exit 130; no temporary file is left."""
    proc = _batch_process(tmp_path)
    _wait_for(proc, "it 1")  # the first file's fit is running
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "[2/2]" not in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]
    assert read_image_meta(tmp_path / "out" / "a.png").provenance["interrupted"] is True
    assert (tmp_path / "h_a.tif").is_file()
    assert "0 done, 0 skipped, 0 failed in " in out
    assert f"stopped by Ctrl-C at {tmp_path / 'a.png'} (its estimate so far was written); 1 not started" in out
    assert not [p for p in tmp_path.rglob(".*")], "a temporary file was left behind"


def test_sigterm_stops_the_batch_at_once(raw, tmp_path, capsys, one_torch_thread, monkeypatch):
    """SIGTERM (here raised where the handler raises it: in the second file's fit): nothing is
    written for that file, the batch stops with a summary, exit 143."""
    real = cli._run_job
    calls = []

    def terminated_in_the_second(job, quiet):
        calls.append(job)
        if len(calls) == 2:
            raise cli.Terminated(signal.SIGTERM)
        return real(job, quiet)

    monkeypatch.setattr(cli, "_run_job", terminated_in_the_second)
    rc, out, err = _run(capsys, "denoise", f"{raw}/*.png", "--out-dir", tmp_path / "c", *FAST)
    assert rc == 143
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["a.png"]
    assert "terminated: stopped at once" in err
    assert "1 done, 0 skipped, 0 failed in 0:0" in out
    assert f"terminated at {raw / 'b.png'} (nothing written for it); 1 not started" in out


def test_results_of_an_earlier_run_below_the_inputs_are_not_inputs(raw, tmp_path, capsys, one_torch_thread, fits):
    """--out-dir inside the searched folder: a re-run does not take the earlier results as inputs."""
    clean = raw / "clean"
    assert _run(capsys, "denoise", f"{raw}/**/*.png", "--out-dir", clean, *FAST)[0] == 0
    fits.clear()
    rc, out, err = _run(capsys, "denoise", f"{raw}/**/*.png", "--out-dir", clean, "--skip-existing", *FAST)
    assert rc == 0, err
    assert "0 done, 3 skipped, 0 failed" in out and not fits
    assert sorted(p.name for p in clean.iterdir()) == ["a.png", "b.png", "c.png"]


def test_a_failed_history_write_leaves_nothing_for_that_file_and_a_rerun_redoes_it(
    raw, tmp_path, capsys, one_torch_thread, monkeypatch
):
    """Disk full while b's history is written: b is reported, neither its history nor its result
    is there, no temporary file is left; the others are complete; --skip-existing redoes b only."""
    (tmp_path / "hist").mkdir()
    real = tifffile.imwrite

    def full_disk_for_b(path, data, **kw):
        real(path, data, **kw)
        if Path(path).name.startswith(".b."):  # the temporary file of b's history (atomic_output)
            with open(path, "r+b") as fh:
                fh.truncate(os.path.getsize(path) // 2)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full_disk_for_b)
    argv = ["denoise", raw, "--out-dir", tmp_path / "clean", "--history", f"{tmp_path}/hist/{{stem}}.tif"]
    rc, out, err = _run(capsys, *argv, "--iterations", "10", "-q")
    assert rc == 1
    assert f"failed: {raw / 'b.png'}: cannot write {tmp_path / 'hist' / 'b.tif'}: no space left" in err
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["a.png", "c.png"]
    assert sorted(p.name for p in (tmp_path / "hist").iterdir()) == ["a.tif", "c.tif"]
    assert "2 done, 0 skipped, 1 failed" in out
    monkeypatch.setattr(tifffile, "imwrite", real)
    rc, out, err = _run(capsys, *argv, "--skip-existing", "--iterations", "10", "-q")
    assert rc == 0, err
    assert "1 done, 2 skipped, 0 failed" in out
    assert read_history_tiff(tmp_path / "hist" / "b.tif")[0].shape == (10, 24, 24)


def test_files_are_read_one_at_a_time(raw, tmp_path, capsys, one_torch_thread):
    """The default runner reads the next file only after the previous one is written."""
    rc, out, err = _run(capsys, "denoise", raw, "--out-dir", tmp_path / "clean", *FAST)
    assert rc == 0, err
    assert out.index(f"wrote {tmp_path / 'clean' / 'a.png'}") < out.index("[2/3]")
    assert out.index(f"wrote {tmp_path / 'clean' / 'b.png'}") < out.index("[3/3]")
