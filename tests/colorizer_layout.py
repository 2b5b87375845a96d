"""The published eccv16 / siggraph17 state-dict layout (tests/colorization/data) and random weights in it.

Shared by the core and widget tests (pytest puts this folder on sys.path through conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

KEYS_FILE = Path(__file__).parent / "colorization" / "data" / "colorizer_state_dict_keys.txt"


def published_layout() -> dict[str, dict[str, list[int]]]:
    """{model: {key: shape}} and the parameter counts, parsed from the key file."""
    layout: dict[str, dict[str, list[int]]] = {}
    section = None
    for line in KEYS_FILE.read_text().splitlines():
        m = re.match(r"== (\w+)", line)
        if m:
            section = m.group(1)
            layout[section] = {}
            continue
        m = re.match(r"\s+(\S+)\s+\[([\d, ]*)\]$", line)
        if m and section:
            layout[section][m.group(1)] = [int(x) for x in m.group(2).split(",") if x.strip()]
        m = re.match(r"\s+params (\d+)", line)
        if m and section:
            layout[section]["__params__"] = [int(m.group(1))]
    return layout


def random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the published keys and shapes and well-scaled random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in published_layout()[name].items():
        if key == "__params__":
            continue
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(100, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or (key.endswith("bias") and len(shape) == 1):
            sd[key] = 0.01 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # BatchNorm weight
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, torch.Size(shape).numel() // shape[0])
            sd[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return sd
