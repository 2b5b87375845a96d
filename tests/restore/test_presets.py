import pytest

from napari_deep_prior.restore.presets import (
    PRESET_DESCRIPTIONS,
    PRESETS,
    DIPParams,
    get_preset,
    preset_names,
)


def test_paper_presets_follow_the_reference():
    d = get_preset("paper", task="denoise")
    assert d is PRESETS["denoise-paper"]
    assert (d.iterations, d.lr, d.exp_weight, d.early_stop) == (1800, 0.01, 0.99, False)
    assert d.net.channels_down == (128,) * 5 and d.net.channels_skip == (4,) * 5
    i = get_preset("paper", task="inpaint")
    assert i is PRESETS["inpaint-text"]
    assert (i.iterations, i.reg_noise_std, i.exp_weight) == (6001, 0.03, None)
    b = PRESETS["restore-missing-pixels"]
    assert (b.iterations, b.lr) == (11000, 0.001)
    lib = PRESETS["inpaint-large-regions"].net
    assert (lib.kernel_down, lib.kernel_up, lib.need_1x1_up, lib.input_depth, lib.depth) == (5, 3, False, 1, 6)


def test_defaults_stop_early_and_every_preset_is_described():
    assert get_preset("denoise").early_stop and get_preset("inpaint").early_stop
    for task in ("denoise", "inpaint"):
        names = preset_names(task)
        assert names[0] == task
        for n in names:
            assert n in PRESET_DESCRIPTIONS


def test_unknown_preset_and_paper_without_task():
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        get_preset("fast")
    with pytest.raises(ValueError, match="needs a task"):
        get_preset("paper")


@pytest.mark.parametrize(
    "kw, exc",
    [
        (dict(iterations=0), ValueError),
        (dict(iterations=-5), ValueError),
        (dict(iterations=2.5), TypeError),
        (dict(lr=0), ValueError),
        (dict(exp_weight=1.0), ValueError),
        (dict(loss="l1"), ValueError),
        (dict(es_window=0), ValueError),
        (dict(history_spacing="cubic"), ValueError),
    ],
)
def test_dipparams_validation(kw, exc):
    with pytest.raises(exc):
        DIPParams(**kw)


def test_replace_accepts_net_fields():
    p = get_preset("denoise").replace(iterations=7, input_depth=3)
    assert p.iterations == 7 and p.net.input_depth == 3
    assert get_preset("denoise").iterations != 7  # presets are frozen and unchanged
