"""The shared floor (napari_deep_prior.arrays): generators, seeds, durations, channel axes and
the dtype/range/layout round trip used by restoration and colorization alike."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_deep_prior.arrays import (
    MIN_SIDE,
    Layout,
    check_data_range,
    check_seed,
    denormalise,
    derive_seed,
    drive,
    finite_range,
    format_duration,
    guess_channel_axis,
    new_seed,
    normalise,
    normalise_channel_axis,
    split_channels,
)

# --- drive ----------------------------------------------------------------------------------


def _steps(n: int, log: list[str]):
    try:
        yield from range(n)
        return "done"
    finally:
        log.append("closed")


def test_drive_returns_the_generators_value_and_calls_back_per_item():
    log: list[str] = []
    seen: list[int] = []
    assert drive(_steps(4, log), seen.append) == "done"
    assert seen == [0, 1, 2, 3]
    assert log == ["closed"]


def test_drive_without_a_callback():
    log: list[str] = []
    assert drive(_steps(3, log)) == "done"
    assert drive(_steps(0, log)) == "done"
    assert log == ["closed", "closed"]


def test_drive_closes_the_generator_when_the_callback_raises():
    log: list[str] = []
    seen: list[int] = []

    def callback(item):
        seen.append(item)
        if item == 1:
            raise KeyboardInterrupt

    gen = _steps(10, log)
    with pytest.raises(KeyboardInterrupt):
        drive(gen, callback)
    assert seen == [0, 1]
    assert log == ["closed"]  # the generator's finally ran: what it held is released
    with pytest.raises(StopIteration):
        next(gen)


def test_drive_propagates_the_generators_own_error():
    def failing():
        yield 1
        raise RuntimeError("fit diverged")

    with pytest.raises(RuntimeError, match="fit diverged"):
        drive(failing(), lambda _item: None)


# --- seeds ----------------------------------------------------------------------------------


def test_new_seed_is_in_range_and_varies():
    seeds = [new_seed() for _ in range(20)]
    assert all(isinstance(s, int) and 0 <= s < 2**31 - 1 for s in seeds)
    assert len(set(seeds)) > 1


def test_derive_seed_is_deterministic_and_distinct_per_key():
    assert derive_seed(7, 1) == derive_seed(7, 1)
    assert derive_seed(7, 1, 2) == derive_seed(7, 1, 2)
    derived = {derive_seed(7, k) for k in range(50)}
    assert len(derived) == 50
    assert derive_seed(7, 1) != derive_seed(8, 1)
    assert derive_seed(7, 1, 2) != derive_seed(7, 2, 1)
    assert all(0 <= s < 2**31 - 1 for s in derived)
    assert derive_seed(7) == 7  # no keys: the seed itself
    assert derive_seed(np.int64(7), np.int32(1)) == derive_seed(7, 1)


def test_check_seed_accepts_ints_and_none():
    assert check_seed(None) is None
    assert check_seed(3) == 3
    value = check_seed(np.int64(5))
    assert value == 5 and type(value) is int


def test_check_seed_rejects_a_float():
    with pytest.raises(TypeError, match=r"seed must be an integer or None, got 1\.5"):
        check_seed(1.5)


def test_check_seed_rejects_a_bool():
    with pytest.raises(TypeError, match="seed must be an integer or None, got True"):
        check_seed(True)


def test_check_seed_rejects_a_string():
    with pytest.raises(TypeError, match="seed must be an integer or None, got '3'"):
        check_seed("3")


# --- format_duration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0:00"),
        (5.4, "0:05"),
        (59, "0:59"),
        (59.6, "1:00"),
        (61, "1:01"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (3661, "1:01:01"),
        (36000, "10:00:00"),
        (math.nan, "?"),
        (math.inf, "?"),
        (-1, "?"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# --- channel axis ---------------------------------------------------------------------------


def test_normalise_channel_axis_values():
    assert normalise_channel_axis(None, 3) is None
    assert normalise_channel_axis(-1, 3) == 2
    assert normalise_channel_axis(0, 3) == 0
    assert normalise_channel_axis(-3, 3) == 0
    assert normalise_channel_axis(np.int64(2), 3) == 2


def test_normalise_channel_axis_rejects_a_bool():
    with pytest.raises(TypeError, match="channel_axis must be an int or None, got True"):
        normalise_channel_axis(True, 3)


def test_normalise_channel_axis_rejects_a_float():
    with pytest.raises(TypeError, match=r"channel_axis must be an int or None, got 1\.0"):
        normalise_channel_axis(1.0, 3)


def test_normalise_channel_axis_out_of_range_names_the_shape():
    with pytest.raises(ValueError, match=r"channel_axis 3 is out of range for an image of shape \(4, 5, 3\)"):
        normalise_channel_axis(3, 3, (4, 5, 3))


def test_normalise_channel_axis_out_of_range_below():
    with pytest.raises(ValueError, match="channel_axis -4 is out of range for an image with 3 dimensions"):
        normalise_channel_axis(-4, 3)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((32, 32), None),
        ((32, 32, 3), -1),
        ((32, 32, 4), -1),
        ((5, 32, 32, 3), -1),
        ((32, 32, 2), None),
        ((32, 32, 5), None),
        ((3, 32, 32), None),  # channels first is never guessed
        ((3,), None),
    ],
)
def test_guess_channel_axis(shape, axis):
    assert guess_channel_axis(shape) == axis


# --- split_channels -------------------------------------------------------------------------


def test_split_channels_moves_channels_last_and_detects_alpha():
    arr, ca, alpha = split_channels(np.zeros((3, 16, 20)), 0, None)
    assert arr.shape == (16, 20, 3) and ca == 0 and alpha is False
    arr, ca, alpha = split_channels(np.zeros((16, 20, 4)), -1, None)
    assert arr.shape == (16, 20, 4) and ca == 2 and alpha is True
    arr, ca, alpha = split_channels(np.zeros((2, 16, 20)), None, None)
    assert arr.shape == (2, 16, 20, 1) and ca is None and alpha is False


def test_split_channels_rejects_an_empty_image():
    with pytest.raises(ValueError, match=r"image is empty \(shape \(0, 16\)\)"):
        split_channels(np.zeros((0, 16)), None, None)


def test_split_channels_rejects_a_small_image():
    with pytest.raises(ValueError, match=f"needs at least {MIN_SIDE}x{MIN_SIDE} pixels"):
        split_channels(np.zeros((4, 16)), None, None)


def test_split_channels_rejects_a_1d_multichannel_image():
    with pytest.raises(ValueError, match="a multichannel image needs at least 3 dimensions"):
        split_channels(np.zeros((16, 3)), -1, None)


def test_split_channels_rejects_alpha_without_colour():
    with pytest.raises(ValueError, match="has_alpha needs at least 2 channels"):
        split_channels(np.zeros((16, 16, 1)), -1, True)


# --- normalise / denormalise ----------------------------------------------------------------


def _round_trip(image: np.ndarray, channel_axis, has_alpha=None):
    arr, ca, alpha = split_channels(image, channel_axis, has_alpha)
    planes, layout = normalise(arr, alpha, image.shape, ca)
    return planes, layout


def test_round_trip_uint8_grey():
    rng = np.random.default_rng(0)
    image = rng.integers(3, 250, size=(16, 20), dtype=np.uint8)
    planes, layout = _round_trip(image, None)
    assert isinstance(layout, Layout)
    assert planes.dtype == np.float32 and planes.shape == (1, 16, 20, 1)
    assert planes.min() == 0.0 and planes.max() == 1.0  # the image's own range maps to [0, 1]
    back = denormalise(planes, layout)
    assert back.dtype == np.uint8 and back.shape == image.shape
    np.testing.assert_array_equal(back, image)


def test_round_trip_float32_rgb_channels_first():
    rng = np.random.default_rng(1)
    image = rng.uniform(-2.0, 5.0, size=(3, 16, 20)).astype(np.float32)
    planes, layout = _round_trip(image, 0)
    assert planes.shape == (1, 16, 20, 3)
    assert layout.channel_axis == 0 and layout.alpha is None
    back = denormalise(planes, layout)
    assert back.dtype == np.float32 and back.shape == (3, 16, 20)
    np.testing.assert_allclose(back, image, atol=1e-5)


def test_round_trip_uint16_stack():
    rng = np.random.default_rng(2)
    image = rng.integers(100, 60000, size=(4, 16, 20), dtype=np.uint16)
    planes, layout = _round_trip(image, None)
    assert planes.shape == (4, 16, 20, 1) and layout.stack_shape == (4,)
    back = denormalise(planes, layout)
    assert back.dtype == np.uint16 and back.shape == image.shape
    np.testing.assert_array_equal(back, image)


def test_round_trip_float16_comes_back_as_float32():
    image = np.linspace(0, 1, 16 * 20, dtype=np.float16).reshape(16, 20)
    planes, layout = _round_trip(image, None)
    assert layout.result_dtype == np.float32
    back = denormalise(planes, layout)
    assert back.dtype == np.float32 and back.shape == image.shape
    np.testing.assert_allclose(back, image.astype(np.float32), atol=1e-3)


def test_constant_image_round_trips():
    image = np.full((16, 16), 42, dtype=np.uint8)
    planes, layout = _round_trip(image, None)
    assert np.isfinite(planes).all()
    np.testing.assert_array_equal(denormalise(planes, layout), image)


def test_normalise_rejects_nan():
    image = np.zeros((16, 16), dtype=np.float32)
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\)"):
        _round_trip(image, None)


def _rgba(rng, shape=(16, 20)) -> np.ndarray:
    image = rng.integers(0, 256, size=shape + (4,), dtype=np.uint8)
    image[..., 3] = np.arange(shape[1], dtype=np.uint8)[None, :] * 7  # an alpha ramp
    return image


def test_rgba_alpha_is_passed_through_untouched():
    rng = np.random.default_rng(3)
    image = _rgba(rng)
    planes, layout = _round_trip(image, -1)
    assert planes.shape == (1, 16, 20, 3)  # only the colour channels are fitted
    assert layout.alpha is not None
    # a changed result: the colour changes, the alpha does not
    back = denormalise(np.clip(planes * 0.5, 0, 1), layout)
    assert back.shape == image.shape and back.dtype == np.uint8
    np.testing.assert_array_equal(back[..., 3], image[..., 3])
    assert not np.array_equal(back[..., :3], image[..., :3])
    np.testing.assert_array_equal(denormalise(planes, layout), image)


def test_denormalise_upscaled_planes_keeps_alpha_resized_and_the_layout():
    rng = np.random.default_rng(4)
    image = _rgba(rng)  # (16, 20, 4), channels last
    planes, layout = _round_trip(image, -1)
    big = planes.repeat(2, axis=1).repeat(2, axis=2)  # an up-scaled result, (1, 32, 40, 3)
    back = denormalise(big, layout)
    assert back.shape == (32, 40, 4) and back.dtype == np.uint8
    assert layout.result_shape(32, 40) == back.shape
    expected_alpha = image[..., 3].repeat(2, axis=0).repeat(2, axis=1)  # nearest neighbour
    np.testing.assert_array_equal(back[..., 3], expected_alpha)
    np.testing.assert_array_equal(back[::2, ::2, :3], image[..., :3])


def test_denormalise_upscaled_planes_channels_first_stack():
    rng = np.random.default_rng(5)
    image = rng.uniform(0, 1, size=(2, 3, 16, 20)).astype(np.float32)  # (T, C, H, W)
    planes, layout = _round_trip(image, 1)
    assert planes.shape == (2, 16, 20, 3)
    back = denormalise(planes.repeat(2, axis=1).repeat(2, axis=2), layout)
    assert back.shape == (2, 3, 32, 40) == layout.result_shape(32, 40)
    np.testing.assert_allclose(back[:, :, ::2, ::2], image, atol=1e-6)


def test_denormalise_keeps_known_pixels_exactly():
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, size=(16, 20), dtype=np.uint8)
    planes, layout = _round_trip(image, None)
    known = np.zeros((1, 16, 20), dtype=bool)
    known[0, :8] = True
    back = denormalise(np.zeros_like(planes), layout, keep=(known, layout.source))
    np.testing.assert_array_equal(back[:8], image[:8])
    assert (back[8:] == image.min()).all()


# --- data_range: the planes of a stack normalised one at a time ----------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32, np.float64])
def test_normalise_with_the_stack_range_equals_the_whole_stack(dtype):
    rng = np.random.default_rng(7)
    stack = (rng.uniform(0.1, 0.9, size=(5, 16, 20)) * (200 if np.dtype(dtype).kind == "u" else 3)).astype(dtype)
    stack[2] = stack[2] // 2 if np.dtype(dtype).kind == "u" else stack[2] - 1  # planes differ in range
    whole, whole_layout = _round_trip(stack, None)
    lo = min(finite_range(p)[0] for p in stack)
    hi = max(finite_range(p)[1] for p in stack)
    for i in range(len(stack)):
        plane = stack[i : i + 1]
        arr, ca, alpha = split_channels(plane, None, None)
        planes, layout = normalise(arr, alpha, plane.shape, ca, data_range=(lo, hi))
        np.testing.assert_array_equal(planes, whole[i : i + 1])  # bitwise
        assert (layout.lo, layout.scale) == (whole_layout.lo, whole_layout.scale)
        np.testing.assert_array_equal(denormalise(planes, layout), denormalise(whole, whole_layout)[i : i + 1])


def test_normalise_with_a_data_range_ignores_nan_in_holes():
    image = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    image[4, 4] = np.nan
    known = np.ones((1, 16, 16), bool)
    known[0, 4, 4] = False
    arr, ca, alpha = split_channels(image, None, None)
    planes, layout = normalise(arr, alpha, image.shape, ca, known=known, data_range=(-1.0, 3.0))
    assert layout.lo == -1.0 and layout.scale == 4.0 and planes[0, 4, 4, 0] == 0.0


def test_finite_range():
    assert finite_range(np.array([3, 1, 2], np.uint8)) == (1.0, 3.0)
    assert finite_range(np.array([np.nan, 2.0, -np.inf, 5.0])) == (2.0, 5.0)
    assert finite_range(np.array([np.nan])) is None


def test_check_data_range_values():
    assert check_data_range(None) is None
    assert check_data_range((0, 255)) == (0.0, 255.0)
    assert check_data_range(np.array([1.5, 1.5])) == (1.5, 1.5)


@pytest.mark.parametrize("bad", [5, "ab", (1,), (1, 2, 3), ("0", 1), (True, 2)])
def test_check_data_range_rejects_a_non_pair(bad):
    with pytest.raises(TypeError, match="data_range must be a pair"):
        check_data_range(bad)


@pytest.mark.parametrize("bad", [(2, 1), (0, np.inf), (np.nan, 1)])
def test_check_data_range_rejects_reversed_or_non_finite(bad):
    with pytest.raises(ValueError, match=r"data_range must be two finite numbers \(lo, hi\) with lo <= hi"):
        check_data_range(bad)


def test_normalise_refuses_values_outside_the_data_range():
    image = np.linspace(0, 10, 256, dtype=np.float32).reshape(16, 16)
    arr, ca, alpha = split_channels(image, None, None)
    with pytest.raises(ValueError, match=r"span \[0, 10\], outside the data_range \(0, 5\)"):
        normalise(arr, alpha, image.shape, ca, data_range=(0, 5))
