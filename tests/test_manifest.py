"""The npe2 manifest and the package's import surface.

napari reads ``src/napari_deep_prior/napari.yaml`` (a regular file, so that every build
backend and every platform ships it); the top-level ``napari.yaml`` is a copy for readers of
the repository and must stay byte-identical.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import napari_deep_prior

ROOT = Path(__file__).resolve().parents[1]
TOP = ROOT / "napari.yaml"
PACKAGED = ROOT / "src" / "napari_deep_prior" / "napari.yaml"


def _python_names(node) -> list[str]:
    """Every ``python_name`` value anywhere in the parsed manifest."""
    if isinstance(node, dict):
        found = [node["python_name"]] if "python_name" in node else []
        for value in node.values():
            found += _python_names(value)
        return found
    if isinstance(node, list):
        return [name for item in node for name in _python_names(item)]
    return []


def _manifest() -> dict:
    return yaml.safe_load(PACKAGED.read_text(encoding="utf-8"))


def test_packaged_manifest_is_a_regular_file_identical_to_the_top_level_copy():
    assert PACKAGED.is_file() and not PACKAGED.is_symlink()
    assert TOP.is_file() and not TOP.is_symlink()
    assert PACKAGED.read_bytes() == TOP.read_bytes(), (
        "src/napari_deep_prior/napari.yaml and napari.yaml differ: edit one, copy it over the other"
    )


def test_the_installed_package_ships_the_manifest():
    # the napari.manifest entry point names "napari_deep_prior:napari.yaml"
    assert (Path(napari_deep_prior.__file__).parent / "napari.yaml").is_file()


def test_manifest_names_this_package_and_validates():
    data = _manifest()
    assert data["name"] == "napari-deep-prior"
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(PACKAGED)
    assert manifest.name == "napari-deep-prior"


def test_every_command_has_a_python_name_and_every_contribution_a_command():
    contributions = _manifest()["contributions"]
    commands = {c["id"] for c in contributions["commands"]}
    assert all("python_name" in c for c in contributions["commands"])
    used = {w["command"] for w in contributions.get("widgets", [])}
    used |= {s["command"] for s in contributions.get("sample_data", [])}
    assert used <= commands, used - commands


@pytest.mark.parametrize("python_name", _python_names(yaml.safe_load(PACKAGED.read_text(encoding="utf-8"))))
def test_python_name_points_at_an_importable_attribute(python_name):
    module_name, _, attr = python_name.partition(":")
    assert module_name.startswith("napari_deep_prior.") and attr, python_name
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr)), python_name


def _fresh_python(*lines: str) -> str:
    """Run ``lines`` in a new interpreter; its stdout."""
    out = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_the_package_is_light():
    """`import napari_deep_prior` (as napari does when it discovers the plugin) loads neither
    torch nor Qt nor napari: those come with the first function or widget used."""
    heavy = _fresh_python(
        "import sys, napari_deep_prior",
        "print(' '.join(m for m in ('torch', 'qtpy', 'napari') if m in sys.modules))",
    )
    assert heavy == ""


@pytest.mark.parametrize(
    "before",
    ["pass", "import napari_deep_prior.restore.api, napari_deep_prior.colorization.api"],
    ids=["fresh", "after-the-subpackages"],
)
def test_public_names_are_the_functions(before):
    """`from napari_deep_prior import colorize` gives the function, in a fresh interpreter and
    once the `colorize` subpackage (or `restore`) has been imported by something else (the
    widget, the command line): the subpackage must not shadow the function."""
    kinds = _fresh_python(
        before,
        "import importlib",
        "import napari_deep_prior as m",
        "for name in ('colorize', 'denoise', 'inpaint', 'upscale'):",
        "    try:",
        "        f = getattr(importlib.import_module('napari_deep_prior'), name)",
        "        exec(f'from napari_deep_prior import {name} as g')",
        "        print(name, type(f).__name__, type(g).__name__, type(getattr(m, name)).__name__)",
        "    except Exception as exc:",
        "        print(name, type(exc).__name__)",
    )
    got = dict(line.split(" ", 1) for line in kinds.splitlines())
    assert got == dict.fromkeys(("colorize", "denoise", "inpaint", "upscale"), "function function function")
