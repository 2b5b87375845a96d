"""Reliability of the restoration core: bounds, divergence, constant images, memory limits, messages.

Real computations on tiny images with few iterations; the faults are real too (an operator whose
output turns NaN, an impossible allocation, an address-space limit set in a subprocess).
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from napari_deep_prior import device
from napari_deep_prior.arrays import SEED_MAX, check_seed, derive_seed, drive, new_seed
from napari_deep_prior.errors import FitDivergedError, ImageTooLargeError, ParameterError
from napari_deep_prior.restore import api
from napari_deep_prior.restore.api import denoise, inpaint, prepare, prepare_denoise, prepare_inpaint, upscale
from napari_deep_prior.restore.degradations import Identity, Operator
from napari_deep_prior.restore.fit import DIPFit, history_cadence, history_iterations
from napari_deep_prior.restore.planning import MemoryPlanError, check_image_bytes, estimate_fit_bytes
from napari_deep_prior.restore.presets import DIPParams


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


# -- 1. a NaN / inf loss -----------------------------------------------------------------------


class NaNAt(Operator):
    """The identity, except that the prediction is NaN at the given steps (the weights follow)."""

    def __init__(self, steps):
        super().__init__(None)
        self.steps, self.calls = set(steps), 0

    def __call__(self, x):
        self.calls += 1
        return x * float("nan") if self.calls in self.steps else x


class NaNDegradation(Identity):
    def __init__(self, steps):
        self._steps = steps

    def operator(self, plane, box=None):
        return NaNAt(self._steps)


def _fit(image, params, op):
    return DIPFit(image[..., None].astype(np.float32), operator=op, params=params, device=torch.device("cpu"), seed=0)


@pytest.mark.parametrize("averaging", [0.99, None])
def test_a_nan_loss_rolls_back_once_and_the_fit_goes_on(tiny_params, smooth_image, averaging):
    p = tiny_params.replace(early_stop=False, exp_weight=averaging)
    fit = _fit(smooth_image, p, NaNAt({13}))
    steps = []
    res = drive(fit.steps(), steps.append)
    assert [s.backtracked for s in steps] == [False, False, True, False, False, False]
    assert all(np.isfinite(s.loss) for s in steps)
    assert res.iterations_run == 30 and np.isfinite(res.image).all()
    assert np.isnan(res.losses[12]) and np.isfinite(res.losses[15:]).all()  # the record keeps the NaN
    # the history frames of the diverged stretch show the rolled-back estimate, not NaN
    assert np.isfinite(res.history.frames).all() and len(res.history.iterations) == 10


def test_a_second_nan_loss_raises_fit_diverged(tiny_params, smooth_image):
    p = tiny_params.replace(early_stop=False)
    with pytest.raises(FitDivergedError) as exc:
        drive(_fit(smooth_image, p, NaNAt({13, 22})).steps())
    msg = str(exc.value)
    assert "diverged at iteration 22 (loss nan) again" in msg and "iteration 13" in msg
    assert "lower lr (it is 0.01; the presets use 0.01)" in msg
    assert isinstance(exc.value, ArithmeticError) and isinstance(exc.value, ValueError)
    assert "lower --lr" in exc.value.reword({"lr": "--lr"})


@pytest.mark.parametrize("backtrack", [True, False])
def test_a_nan_loss_without_a_checkpoint_raises_at_once(tiny_params, smooth_image, backtrack):
    p = tiny_params.replace(early_stop=False, backtrack=backtrack)
    with pytest.raises(FitDivergedError, match="diverged at iteration 3 \\(loss nan\\)") as exc:
        drive(_fit(smooth_image, p, NaNAt({3})).steps())
    assert ("turn backtrack on" in str(exc.value)) is not backtrack


def test_the_job_propagates_fit_diverged(tiny_params, smooth_image):
    job = prepare(NaNDegradation({2}), smooth_image, params=tiny_params, seed=0)
    with pytest.raises(FitDivergedError):
        drive(job.steps())


def test_an_impossible_allocation_during_the_run_is_image_too_large(tiny_params, smooth_image):
    class Hungry(Operator):
        def __call__(self, x):
            torch.empty(2**44, dtype=torch.uint8)  # 16 TiB: the allocator refuses
            return x

    class HungryDegradation(Identity):
        def operator(self, plane, box=None):
            return Hungry()

    job = prepare(HungryDegradation(), smooth_image, params=tiny_params, seed=0)
    with pytest.raises(ImageTooLargeError, match="ran out of memory on cpu") as exc:
        drive(job.steps())
    assert isinstance(exc.value, ParameterError) and "--tile" in exc.value.reword({"tile_size": "--tile"})


# -- 2. parameter bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 1e30, 2.0, 0.0, -0.01])
def test_learning_rate_bounds(smooth_image, lr):
    with pytest.raises(ParameterError, match="lr \\(the learning rate\\) must be a finite number > 0 and <= 1") as exc:
        prepare_denoise(smooth_image, lr=lr)
    assert "the presets use 0.01" in str(exc.value)
    assert exc.value.reword({"lr": "--lr"}).startswith("--lr (the learning rate)")
    DIPParams(lr=1.0)  # the bound itself is accepted


@pytest.mark.parametrize("seed", [2**70, 2**32, -1])
def test_seed_out_of_range_is_a_parameter_error(smooth_image, seed):
    with pytest.raises(ParameterError, match=f"seed must be an integer from 0 to {SEED_MAX}.*got {seed}"):
        prepare_denoise(smooth_image, seed=seed)


def test_the_largest_seed_runs(tiny_params, smooth_image):
    assert check_seed(np.uint64(SEED_MAX)) == SEED_MAX
    out = denoise(smooth_image, params=tiny_params.replace(iterations=2), seed=SEED_MAX)
    assert np.isfinite(out).all()
    assert all(0 <= s <= SEED_MAX for s in [new_seed(), derive_seed(SEED_MAX, 3), derive_seed(0, 1, 2)])


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(gain=float("inf")), "gain"),
        (dict(gain=float("nan")), "gain"),
        (dict(read_noise=float("nan")), "read_noise"),
        (dict(read_noise=-0.5), "read_noise"),
        (dict(camera_offset=float("-inf")), "camera_offset"),
    ],
)
def test_camera_values_must_be_finite(smooth_image, kw, name):
    with pytest.raises(ParameterError) as exc:
        prepare_denoise((smooth_image * 50).astype(np.uint16), loss="poisson", **kw)
    assert exc.value.params == (name,)
    assert exc.value.reword({name: "--X"}).startswith("--X must be")


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(reg_noise_std=float("nan")), "reg_noise_std"),
        (dict(backtrack_db=float("inf")), "backtrack_db"),
        (dict(history_every=-1), "history_every"),
        (dict(iterations=0), "iterations"),
    ],
)
def test_params_errors_name_the_parameter(kw, name):
    with pytest.raises(ParameterError) as exc:
        DIPParams(**kw)
    assert exc.value.params == (name,)


def test_messages_that_named_api_parameters_are_templates(smooth_image):
    cases = [
        (dict(tile_size=8), "tile_size", "leave --tile automatic"),
        (dict(tile_size=-1), "tile_size", "--tile must be >= 0"),
        (dict(tile_size=64, tile_overlap=64), "tile_overlap", "--overlap 64 must be smaller"),
        (dict(channel_axis=5), "channel_axis", "--channel-axis 5 is out of range"),
        (dict(output_dtype="complex64"), "output_dtype", "--dtype 'complex64' is not supported"),
        (dict(preset="fast"), "preset", "unknown --preset 'fast'"),
    ]
    names = {"tile_size": "--tile", "tile_overlap": "--overlap", "channel_axis": "--channel-axis"}
    names.update({"output_dtype": "--dtype", "preset": "--preset"})
    for kw, param, text in cases:
        with pytest.raises(ParameterError) as exc:
            prepare_denoise(np.zeros((96, 96)) + smooth_image[:1, :1], **kw)
        assert param in exc.value.params and text in exc.value.reword(names), (kw, str(exc.value))
        assert f"{param}=" not in str(exc.value), str(exc.value)  # no "tile_size=8" any more
    # a user's value with braces in it is quoted, not read as a placeholder
    with pytest.raises(ParameterError, match="unknown preset '{0}'"):
        prepare_denoise(smooth_image, preset="{0}")
    with pytest.raises(ParameterError, match="output_dtype '{x}'"):
        prepare_denoise(smooth_image, output_dtype="{x}")


# -- 3. constant images -----------------------------------------------------------------------------


def test_a_constant_float_image_is_returned_unchanged_without_a_fit(tiny_params):
    img = np.full((32, 32), 0.3, np.float32)
    steps = []
    out, full = denoise(img, params=tiny_params, seed=0, callback=steps.append, return_history=True)
    np.testing.assert_array_equal(out, img)
    assert out.dtype == np.float32 and not steps
    assert full.iterations_run == [0] and full.stop_iterations == [0] and full.fits == [None]
    assert full.history is None and full.planes_done == 1
    assert full.notes == ["the image is constant (value 0.3): nothing to fit, returned unchanged"]


def test_a_constant_colour_image_keeps_its_exact_values(tiny_params):
    img = np.zeros((32, 32, 3), np.uint8) + np.array([10, 200, 30], np.uint8)
    out, full = denoise(img, params=tiny_params, channel_axis=-1, seed=0, return_history=True)
    np.testing.assert_array_equal(out, img)
    assert "constant (values 10, 200, 30)" in full.notes[0]


def test_a_stack_with_one_constant_plane(tiny_params, smooth_image):
    stack = np.stack([np.full((32, 32), 0.5), smooth_image])
    out, full = denoise(stack, params=tiny_params, seed=0, return_history=True)
    np.testing.assert_array_equal(out[0], stack[0])
    assert full.iterations_run == [0, 30] and full.stop_iterations[0] == 0 and full.fits[0] is None
    assert full.history.shape == (10, 2, 32, 32)
    np.testing.assert_array_equal(full.history[:, 0], np.broadcast_to(stack[0], (10, 32, 32)))
    assert np.isnan(full.history_losses[:, 0]).all() and np.isfinite(full.history_losses[:, 1]).all()
    assert full.notes == ["plane 0 is constant (value 0.5): nothing to fit, returned unchanged"]


def test_a_constant_inpainting_fills_the_holes_with_the_constant(tiny_params):
    img = np.full((32, 32), 7, np.uint16)
    mask = np.zeros((32, 32), bool)
    mask[10:14, 10:14] = True
    img[mask] = 60000  # damaged pixels: unknown, whatever their value
    out, full = inpaint(img, mask, params=tiny_params, seed=0, return_history=True)
    np.testing.assert_array_equal(out, np.full((32, 32), 7, np.uint16))
    assert full.iterations_run == [0]
    assert "constant (value 7): nothing to fit, its holes are filled with that constant" in full.notes[0]


def test_a_constant_image_upscaled_is_the_constant_at_the_output_size(tiny_params):
    img = np.full((16, 16), 0.25, np.float64)
    out, full = upscale(img, 2, params=tiny_params, seed=0, return_history=True)
    assert out.shape == (32, 32)
    np.testing.assert_array_equal(out, np.full((32, 32), 0.25))
    assert "the result is that constant at the output size" in full.notes[0]


def test_a_tiled_constant_plane_is_not_fitted(tiny_params, smooth_image):
    big = np.kron(smooth_image, np.ones((3, 3)))  # 96 x 96
    stack = np.stack([np.full((96, 96), 0.2), big])
    p = tiny_params.replace(iterations=4)
    out, full = denoise(stack, params=p, seed=0, tile_size=64, return_history=True)
    np.testing.assert_array_equal(out[0], stack[0])
    assert full.tile_iterations_run[0] == [0] * len(full.tiles) and full.iterations_run[0] == 0
    assert full.iterations_run[1] == 4
    np.testing.assert_allclose(full.history[:, 0], 0.2)


# -- 4. the history cadence --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iterations, every, frames",
    [
        (40, 100, list(range(4, 41, 4))),
        (20, 100, list(range(2, 21, 2))),
        (25, 100, [2 * k for k in range(1, 13)] + [25]),
    ],
)
def test_short_runs_get_at_least_ten_history_frames(iterations, every, frames):
    p = DIPParams(iterations=iterations, history_every=every)
    assert list(history_iterations(p)) == frames


def test_the_history_cadence_of_long_runs_and_off():
    assert history_cadence(DIPParams(iterations=3000, history_every=100)) == 100
    assert len(history_iterations(DIPParams(iterations=3000, history_every=100))) == 30
    assert history_cadence(DIPParams(iterations=3000, history_every=0)) == 0
    assert history_iterations(DIPParams(iterations=40, history_every=0)).size == 0
    assert all(len(history_iterations(DIPParams(iterations=t))) >= 10 for t in range(20, 400, 7))


def test_the_memory_plan_counts_the_adapted_history(tiny_params):
    p = tiny_params.replace(iterations=40, history_every=100)
    with_hist = estimate_fit_bytes(p, 64, 64, 1)
    without = estimate_fit_bytes(p.replace(history_every=0), 64, 64, 1)
    assert with_hist - without == 10 * 64 * 64 * 4


def test_a_forty_iteration_run_has_ten_frames(tiny_params, smooth_image):
    p = tiny_params.replace(iterations=40, history_every=100, early_stop=False)
    _out, full = denoise(smooth_image, params=p, seed=0, return_history=True)
    assert list(full.history_iterations) == list(range(4, 41, 4)) and full.history.shape == (10, 32, 32)


# -- 5. memory limits ------------------------------------------------------------------------------------

GiB = 2**30


def _tree(tmp_path, cgroup_line, files, meminfo_gib=64):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: 1 kB\nMemAvailable: {meminfo_gib * GiB // 1024} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup_line)
    (proc / "self" / "status").write_text("VmSize:\t  1000 kB\n")
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return proc, root


def test_cgroup_v2_limit_minus_usage_with_reclaimable_cache(tmp_path):
    proc, root = _tree(
        tmp_path,
        "0::/user.slice/job\n",
        {
            "user.slice/memory.max": "max\n",
            "user.slice/memory.current": str(5 * GiB),
            "user.slice/job/memory.max": str(2 * GiB),
            "user.slice/job/memory.current": str(GiB),
            "user.slice/job/memory.stat": f"anon 1\ninactive_file {GiB // 2}\nactive_file 3\n",
        },
    )
    lim = device.cpu_memory_limit(proc, root)
    assert (lim.kind, lim.available, lim.limit) == ("cgroup", int(1.5 * GiB), 2 * GiB)
    assert "memory limit of 2.0 GiB of this process's cgroup" in lim.describe()


def test_cgroup_v2_parent_limit_binds_and_a_container_sees_the_root(tmp_path):
    proc, root = _tree(
        tmp_path,
        "0::/a/b\n",
        {
            "a/memory.max": str(GiB),
            "a/memory.current": str(GiB - 2**20),
            "a/b/memory.max": str(8 * GiB),
            "a/b/memory.current": "0",
        },
    )
    assert device.cpu_memory_limit(proc, root).available == 2**20
    # in a container the cgroup path of /proc/self/cgroup is not under the mount: its root is ours
    proc, root = _tree(tmp_path / "c", "0::/docker/abc\n", {"memory.max": str(3 * GiB), "memory.current": str(GiB)})
    assert device.cpu_memory_limit(proc, root).available == 2 * GiB


def test_cgroup_v1_limit_and_unlimited(tmp_path):
    lines = "9:cpu,cpuacct:/slurm/job_7\n4:memory:/slurm/job_7\n0::/\n"
    proc, root = _tree(
        tmp_path,
        lines,
        {
            "memory/slurm/job_7/memory.limit_in_bytes": str(4 * GiB),
            "memory/slurm/job_7/memory.usage_in_bytes": str(3 * GiB),
            "memory/slurm/job_7/memory.stat": f"cache 5\ntotal_inactive_file {GiB}\n",
            "memory/slurm/memory.limit_in_bytes": "9223372036854771712",
            "memory/slurm/memory.usage_in_bytes": str(3 * GiB),
            "memory/memory.limit_in_bytes": "9223372036854771712",
            "memory/memory.usage_in_bytes": str(30 * GiB),
        },
    )
    lim = device.cpu_memory_limit(proc, root)
    assert (lim.kind, lim.available) == ("cgroup", 2 * GiB)
    # no limit anywhere: the RAM available
    proc, root = _tree(
        tmp_path / "u",
        "4:memory:/\n",
        {"memory/memory.limit_in_bytes": "9223372036854771712", "memory/memory.usage_in_bytes": "1"},
        meminfo_gib=3,
    )
    lim = device.cpu_memory_limit(proc, root)
    assert (lim.kind, lim.available, lim.describe()) == ("ram", 3 * GiB, "the RAM available")


def test_ram_smaller_than_the_cgroup_limit_binds(tmp_path):
    proc, root = _tree(tmp_path, "0::/\n", {"memory.max": str(8 * GiB), "memory.current": "0"}, meminfo_gib=1)
    assert device.cpu_memory_limit(proc, root).kind == "ram"
    # no readable files at all: nothing can be told beyond sysconf
    lim = device.cpu_memory_limit(tmp_path / "none", tmp_path / "none")
    assert lim is None or lim.kind == "ram"


def test_the_planner_names_the_bound(monkeypatch, smooth_image):
    monkeypatch.setattr(device, "cpu_memory_limit", lambda *a: device.MemoryLimit(50 * 2**20, "cgroup", GiB))
    img = np.kron(smooth_image, np.ones((8, 8)))  # 256 x 256
    with pytest.raises(MemoryPlanError) as exc:
        prepare_denoise(img, device="cpu", tile_size=0)
    msg = str(exc.value)
    assert "but only 0.0 GiB is available on cpu (the memory limit of 1.0 GiB of this process's cgroup" in msg
    assert isinstance(exc.value, ImageTooLargeError) and "leave --tile automatic" in exc.value.reword(
        {"tile_size": "--tile"}
    )


_ULIMIT_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from napari_deep_prior import device
    from napari_deep_prior.errors import ImageTooLargeError
    from napari_deep_prior.restore.api import prepare_denoise
    image = np.random.default_rng(0).random((512, 512))  # numpy.random loads before the limit
    vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
    extra = int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (max(vm + extra, 2**20), resource.getrlimit(resource.RLIMIT_AS)[1]))
    lim = device.cpu_memory_limit()
    print(lim.kind, lim.available // 2**20)
    try:
        prepare_denoise(image, device="cpu", tile_size=0)
        print("PLANNED")
    except ImageTooLargeError as exc:
        print("REFUSED", exc)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
@pytest.mark.parametrize("extra_mib", [200, -100])
def test_the_address_space_limit_is_a_bound(extra_mib):
    """ulimit -v set for real in a subprocess: the planner refuses with the limit's name, not a traceback."""
    run = subprocess.run(
        [sys.executable, "-c", _ULIMIT_SCRIPT, str(extra_mib)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.splitlines()[:2]
    kind, avail_mib = first.split()
    assert kind == "ulimit" and abs(int(avail_mib) - max(extra_mib, 0)) < 32
    assert second.startswith("REFUSED") and "the address-space limit (ulimit -v) of" in second
    assert "already reserved by the process" in second


# -- 6. refusing an image from its header ------------------------------------------------------------


def test_check_image_bytes_accepts_a_small_image_and_returns_its_estimate():
    need = check_image_bytes((256, 256, 3), "uint8")
    assert 256 * 256 * 3 * 20 < need < GiB


def test_check_image_bytes_refuses_a_huge_header_at_once():
    with pytest.raises(ImageTooLargeError) as exc:
        check_image_bytes((100000, 100000), np.uint8)
    msg = str(exc.value)
    assert "100000x100000 uint8 pixels (shape (100000, 100000))" in msg and "9.3 GiB decoded" in msg
    assert "crop or downscale" in msg
    with pytest.raises(ImageTooLargeError, match="30000x40000 uint16 pixels"):
        check_image_bytes((30000, 40000, 3), "uint16", scale=4)


def test_check_image_bytes_follows_the_memory_available(monkeypatch):
    monkeypatch.setattr(device, "cpu_memory_limit", lambda *a: device.MemoryLimit(GiB, "ulimit", 4 * GiB))
    check_image_bytes((1024, 1024), "uint8")
    with pytest.raises(ImageTooLargeError, match=r"only 1\.0 GiB is available \(the address-space limit"):
        check_image_bytes((8192, 8192), "uint8")
    # up-scaling multiplies the result's buffers
    check_image_bytes((2048, 2048), "uint8", device="cpu")
    with pytest.raises(ImageTooLargeError):
        check_image_bytes((2048, 2048), "uint8", scale=4)


# -- 7. NaN / inf in the input -------------------------------------------------------------------------


def _with_nan(smooth_image):
    img = smooth_image.astype(np.float32)
    img[5, 6] = np.nan
    img[20, 21] = np.inf
    return img


def test_denoise_nan_message_says_how_to_inpaint_them(smooth_image):
    with pytest.raises(ValueError, match=r"2 NaN or infinite value\(s\) at 2 pixel\(s\)") as exc:
        prepare_denoise(_with_nan(smooth_image))
    assert "inpaint" in str(exc.value) and "~np.isfinite(image)" in str(exc.value)


def test_inpaint_accepts_nan_inside_the_holes(tiny_params, smooth_image):
    img = _with_nan(smooth_image)
    mask = ~np.isfinite(img)
    mask[4:8, 4:8] = True
    out = inpaint(img, mask, params=tiny_params, seed=0)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[~mask], img[~mask])
    # the range is that of the finite values: the fill lies in it
    assert smooth_image.min() - 0.3 < out[mask].min() and out[mask].max() < smooth_image.max() + 0.3


def test_inpaint_nan_outside_the_holes_is_refused_with_a_count(smooth_image):
    img = _with_nan(smooth_image)
    mask = np.zeros((32, 32), bool)
    mask[5, 6] = True  # covers the NaN, not the inf
    with pytest.raises(ParameterError, match=r"2 NaN or infinite value\(s\) at 2 pixel\(s\), 1 of them outside") as exc:
        prepare_inpaint(img, mask)
    assert "make the --mask cover them" in exc.value.reword({"mask": "--mask"})


# -- 8. a misread channel axis ---------------------------------------------------------------------------


def test_five_channels_read_as_grey_planes_says_how_it_was_read():
    with pytest.raises(ParameterError) as exc:
        prepare_denoise(np.zeros((48, 48, 5), np.float32))
    msg = str(exc.value)
    assert "shape (48, 48, 5) was read without a channel axis (grey) as 48 planes of 48x5 pixels" in msg
    assert "if its last axis holds 5 channels, give channel_axis -1" in msg
    assert exc.value.reword({"channel_axis": "--channel-axis"}).endswith("give --channel-axis -1")


def test_channels_first_read_with_the_wrong_axis_suggests_the_axis():
    with pytest.raises(ParameterError, match=r"read with 48 channels on axis 2 as one plane of 5x48 pixels.*axis 0"):
        prepare_denoise(np.zeros((5, 48, 48), np.float32), channel_axis=-1)
    with pytest.raises(ParameterError, match="one plane of 5x5 pixels; .*give a larger image"):
        prepare_denoise(np.zeros((5, 5), np.float32))


def test_the_api_module_exposes_the_names():
    assert api.ImageTooLargeError is ImageTooLargeError
