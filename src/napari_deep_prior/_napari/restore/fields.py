"""The restore widget's task-dependent fields, built from the registry of degradations.

Every :class:`~napari_deep_prior.restore.degradations.Field` of a registered degradation
becomes one magicgui widget ("mask": a Labels/Shapes layer choice and a *New mask* button;
"choice": a combo box); a degradation with more than one noise model gets the noise-model
group (model, camera offset, gain, read noise, result type).  The widget shows the fields of
its current task only.  Nothing here knows a task by name.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, FloatSpinBox, PushButton

__all__ = [
    "CAMERA_COUNTS",
    "CAMERA_FIELDS",
    "NOISE_FIELDS",
    "NOISE_LEVEL_FIELD",
    "field_names",
    "field_widgets",
    "noise_widgets",
]

#: The Poisson model's camera fields and their values for plain photon counts.
CAMERA_FIELDS = ("camera_offset", "gain", "read_noise")
CAMERA_COUNTS = {"camera_offset": 0.0, "gain": 1.0, "read_noise": 0.0}
#: The widgets of the noise-model group.
NOISE_FIELDS = ("loss", *CAMERA_FIELDS, "output")
#: The field of a known noise level (Gaussian model; 0 = estimate it from the image).
NOISE_LEVEL_FIELD = "noise_sigma"

_NOISE_LABELS = {"gaussian": "Gaussian (MSE)", "poisson": "Poisson (photon counts)"}
_LOSS_TOOLTIP = (
    "Gaussian: for photographs, scans and any image whose noise has about the same strength "
    "everywhere (fits by mean squared error).\n"
    "Poisson: for low-light images whose pixel values are photon counts (fluorescence, cameras in "
    "photon-counting units): the noise grows with the brightness, and the fit uses the Poisson "
    "likelihood and stops where its deviance from the counts reaches what shot noise leaves. For "
    "camera values that are not counts, set the camera offset, gain and read noise below. Choosing "
    "it with the 'denoise' preset selects 'denoise-poisson'."
)


def field_names(degradation) -> set[str]:
    """Names of the widgets a degradation's task shows beyond the common ones."""
    names: set[str] = set()
    for f in degradation.fields:
        names.add(f.name)
        if f.kind == "mask":
            names.add(f"new_{f.name}")
    if len(degradation.noise_models) > 1:
        names.update(NOISE_FIELDS)
    if degradation.noise_level_stop:
        names.add(NOISE_LEVEL_FIELD)
    return names


def field_widgets(degradations, mask_choices, on_new_mask) -> list:
    """One widget per distinct field of ``degradations`` (a mask field also gets its button)."""
    widgets: list = []
    seen: set[str] = set()
    for deg in degradations:
        for f in deg.fields:
            if f.name in seen:
                continue
            seen.add(f.name)
            if f.kind == "mask":
                widgets.append(
                    ComboBox(
                        name=f.name,
                        label=f.label,
                        choices=mask_choices,
                        tooltip="Pixels to fill: a Labels layer (nonzero = fill) or a Shapes layer "
                        "(inside a shape = fill). A 2D mask applies to every plane of a stack.",
                    )
                )
                button = PushButton(
                    name=f"new_{f.name}",
                    text="New mask",
                    tooltip="Add an empty Labels layer on the image's grid with the paint brush "
                    "selected: paint over the damage, then press Run.",
                )
                button.changed.connect(lambda *_a, name=f.name: on_new_mask(name))
                widgets.append(button)
            elif f.kind == "choice":
                widgets.append(
                    ComboBox(
                        name=f.name,
                        label=f.label,
                        choices=list(f.choices),
                        value=f.default,
                        tooltip=f.help[:1].upper() + f.help[1:] + ".",
                    )
                )
            else:
                raise TypeError(f"field kind {f.kind!r} of {deg.name} has no widget")
    return widgets


def noise_widgets(degradations) -> list:
    """The noise-model group, when some degradation offers more than one noise model, and the
    known noise level, when some degradation stops at it."""
    level = []
    if any(deg.noise_level_stop for deg in degradations):
        level = [
            FloatSpinBox(
                name=NOISE_LEVEL_FIELD,
                label="noise level",
                min=0.0,
                max=1e9,
                step=1.0,
                value=0.0,
                tooltip="Gaussian model: the noise's standard deviation in the image's units (e.g. 25 "
                "for 8-bit values), when it is known; the automatic stop aims at it. 0: estimate it "
                "from the image (the result's metadata records the level used).",
            )
        ]
    models: list[str] = []
    for deg in degradations:
        if len(deg.noise_models) > 1:
            models += [m for m in deg.noise_models if m not in models]
    if not models:
        return level
    loss = ComboBox(
        name="loss", label="noise model", choices=[(_NOISE_LABELS.get(m, m), m) for m in models], tooltip=_LOSS_TOOLTIP
    )
    output = ComboBox(
        name="output",
        label="result type",
        choices=[("auto (float rates for counts)", "auto"), ("input's dtype", "input")],
        tooltip="auto: the input's dtype, except that the Poisson model returns float32 photon rates for "
        "integer counts (a rate is fractional; rounding it to whole photons loses precision at "
        "low light).\ninput's dtype: always the input's dtype, rounded (the older behaviour).",
    )
    offset = FloatSpinBox(
        name="camera_offset",
        label="camera offset",
        min=-1e6,
        max=1e6,
        step=1.0,
        value=0.0,
        tooltip="Poisson model, camera values that are not photon counts (sCMOS/CCD in ADU): the value "
        "of zero photons.",
    )
    gain = FloatSpinBox(
        name="gain",
        label="gain",
        min=1e-4,
        max=1e6,
        step=0.1,
        value=1.0,
        tooltip="Poisson model: camera units per photon (photons = (value - offset) / gain). The result "
        "is returned in the camera's units.",
    )
    read_noise = FloatSpinBox(
        name="read_noise",
        label="read noise",
        min=0.0,
        max=1e4,
        step=0.1,
        value=0.0,
        tooltip="Poisson model: Gaussian read noise of the camera in photons (electrons) rms.",
    )
    return [loss, *level, offset, gain, read_noise, output]
