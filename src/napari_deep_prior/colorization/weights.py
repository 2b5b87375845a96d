"""Finding, downloading and verifying the published colorizer weights.

The weight files are those published by the authors of the networks (Zhang et al.), named
after the torch.hub convention ``<name>-<first 8 hex digits of sha256>.pth``:

============  ======================================  =============
model         file                                    bytes
============  ======================================  =============
eccv16        colorization_release_v2-9b330a0b.pth    128,976,165
siggraph17    siggraph17-df00044c.pth                 136,787,426
============  ======================================  =============

Lookup order (:func:`find_weights`): an explicit path (a file, or a folder holding the
file) > the folder named by the environment variable ``NAPARI_DEEP_PRIOR_WEIGHTS`` > the
torch hub cache (``torch.hub.get_dir()/checkpoints``, shared with ``torch.hub``).
:func:`get_weights` downloads into the first writable of those folders when the file is
missing; offline, it raises :class:`WeightsError` telling which file to fetch from where
and where to put it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError

__all__ = [
    "WeightsInfo",
    "WeightsError",
    "WEIGHTS",
    "ENV_VAR",
    "weights_info",
    "search_folders",
    "find_weights",
    "verify_weights",
    "download_weights",
    "get_weights",
    "load_state_dict",
    "load_colorizer",
]

#: Environment variable naming a folder that holds the weight files.
ENV_VAR = "NAPARI_DEEP_PRIOR_WEIGHTS"
_CHUNK = 1 << 20
#: Files whose hash was checked in this process: (resolved path, size, mtime, prefix).
_VERIFIED: set[tuple] = set()

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class WeightsInfo:
    """One published weight file.

    Attributes
    ----------
    name : str
        Model name ("eccv16", "siggraph17").
    filename : str
        File name; the part after the last "-" is the first hex digits of its sha256.
    size : int
        Size in bytes.
    url : str
        Where the authors publish it.
    """

    name: str
    filename: str
    size: int
    url: str

    @property
    def hash_prefix(self) -> str:
        """The sha256 prefix in the file name (torch.hub convention)."""
        return Path(self.filename).stem.rsplit("-", 1)[-1]

    def describe(self) -> str:
        return f"{self.filename} ({self.size:,} bytes, {self.size / 1e6:.0f} MB)"


WEIGHTS: dict[str, WeightsInfo] = {
    "eccv16": WeightsInfo(
        "eccv16",
        "colorization_release_v2-9b330a0b.pth",
        128_976_165,
        "https://colorizers.s3.us-east-2.amazonaws.com/colorization_release_v2-9b330a0b.pth",
    ),
    "siggraph17": WeightsInfo(
        "siggraph17",
        "siggraph17-df00044c.pth",
        136_787_426,
        "https://colorizers.s3.us-east-2.amazonaws.com/siggraph17-df00044c.pth",
    ),
}


def weights_info(name: str | WeightsInfo) -> WeightsInfo:
    """The :class:`WeightsInfo` of a model name (or the object itself)."""
    if isinstance(name, WeightsInfo):
        return name
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(f"no published weights for {name!r}; choose one of: {', '.join(WEIGHTS)}") from None


def _hub_checkpoints() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def search_folders() -> list[Path]:
    """Folders searched for weight files, in order: ``$NAPARI_DEEP_PRIOR_WEIGHTS``, then
    the torch hub cache's ``checkpoints`` folder."""
    folders = []
    env = os.environ.get(ENV_VAR)
    if env:
        folders.append(Path(env).expanduser())
    folders.append(_hub_checkpoints())
    return folders


def _how_to_fix(info: WeightsInfo, folder: Path | None = None) -> str:
    folder = folder if folder is not None else search_folders()[0]
    return (
        f"The {info.name} colorizer needs the weight file {info.describe()}, published at\n"
        f"  {info.url}\n"
        f"Download it on a machine with internet access and put it in\n"
        f"  {folder}\n"
        f"(or in a folder named by the environment variable {ENV_VAR}, or pass its path "
        f"as weights=...)."
    )


def find_weights(name: str | WeightsInfo, path: str | os.PathLike | None = None) -> Path | None:
    """Where the weight file of ``name`` is, or None when it is nowhere to be found.

    Parameters
    ----------
    name : str or WeightsInfo
    path : path-like, optional
        An explicit file, or a folder holding the file under its published name.  When
        given, it is the only place looked at.

    Raises
    ------
    WeightsError
        If ``path`` is given but holds no such file.
    """
    info = weights_info(name)
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            cand = p / info.filename
            if cand.is_file():
                return cand
            raise WeightsError(f"the folder {p} has no file {info.filename}.\n" + _how_to_fix(info, p))
        if p.is_file():
            return p
        raise WeightsError(f"the weights file {p} does not exist.\n" + _how_to_fix(info))
    for folder in search_folders():
        cand = folder / info.filename
        if cand.is_file():
            return cand
    return None


def verify_weights(path: str | os.PathLike, name: str | WeightsInfo, *, check_hash: bool = True) -> Path:
    """Check a weight file's size and (optionally) the sha256 prefix in its name.

    Raises
    ------
    WeightsError
        Naming the file, what was expected and what to do.
    """
    info = weights_info(name)
    p = Path(path)
    size = p.stat().st_size
    if size != info.size:
        raise WeightsError(
            f"{p} has {size:,} bytes but {info.filename} has {info.size:,}: the file is "
            f"incomplete or not the right one. Delete it and download it again.\n" + _how_to_fix(info, p.parent)
        )
    key = (str(p.resolve()), size, p.stat().st_mtime_ns, info.hash_prefix)
    if check_hash and key not in _VERIFIED:
        digest = _sha256(p)
        if not digest.startswith(info.hash_prefix):
            raise WeightsError(
                f"{p} has sha256 {digest[:16]}..., which does not start with "
                f"{info.hash_prefix} as its published name {info.filename} says: the file "
                f"is damaged. Delete it and download it again.\n" + _how_to_fix(info, p.parent)
            )
        _VERIFIED.add(key)
    return p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# Indirection so tests (and offline installs) can replace the network access.
_urlopen = urllib.request.urlopen


def download_weights(
    name: str | WeightsInfo,
    folder: str | os.PathLike | None = None,
    *,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download a weight file into ``folder`` and verify it.

    The data go to a temporary file in the same folder, which is renamed only after the
    size and the sha256 prefix have been checked, so an interrupted download never leaves a
    file that looks complete.

    Parameters
    ----------
    name : str or WeightsInfo
    folder : path-like, optional
        Destination (created if needed); default: the first of :func:`search_folders`.
    progress : callable, optional
        Called as ``progress(bytes_done, bytes_total)`` after every chunk.
    timeout : float
        Seconds to wait for the server.

    Returns
    -------
    path : Path

    Raises
    ------
    WeightsError
        When offline, when the server refuses, or when the data do not verify.
    """
    info = weights_info(name)
    dest_dir = Path(folder).expanduser() if folder is not None else search_folders()[0]
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the folder {dest_dir} ({exc}).\n" + _how_to_fix(info, dest_dir)) from exc
    dest = dest_dir / info.filename
    fd, tmp_name = tempfile.mkstemp(prefix=info.filename + ".", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        done = 0
        try:
            with os.fdopen(fd, "wb") as out, _urlopen(info.url, timeout=timeout) as resp:
                total = (
                    int(resp.headers.get("Content-Length") or info.size)
                    if getattr(resp, "headers", None) is not None
                    else info.size
                )
                if progress is not None:
                    progress(0, total)
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise WeightsError(
                f"could not download {info.filename} from {info.url} ({exc}); this machine "
                f"may be offline.\n" + _how_to_fix(info, dest_dir)
            ) from exc
        if done != info.size:
            raise WeightsError(
                f"the download of {info.filename} gave {done:,} bytes instead of "
                f"{info.size:,}.\n" + _how_to_fix(info, dest_dir)
            )
        if not h.hexdigest().startswith(info.hash_prefix):
            raise WeightsError(
                f"the downloaded {info.filename} has sha256 {h.hexdigest()[:16]}..., not "
                f"{info.hash_prefix}...: the download is damaged.\n" + _how_to_fix(info, dest_dir)
            )
        os.replace(tmp, dest)
        st = dest.stat()
        _VERIFIED.add((str(dest.resolve()), st.st_size, st.st_mtime_ns, info.hash_prefix))
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def get_weights(
    name: str | WeightsInfo,
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: ProgressCallback | None = None,
    check_hash: bool = True,
) -> Path:
    """Path of a verified weight file: found (see :func:`find_weights`) or downloaded.

    Raises
    ------
    WeightsError
        If the file is not found and ``download`` is False or the download fails, or if
        the file found does not verify.
    """
    info = weights_info(name)
    found = find_weights(info, path)
    if found is None:
        if not download:
            raise WeightsError(
                f"{info.filename} was not found in {', '.join(str(f) for f in search_folders())}.\n" + _how_to_fix(info)
            )
        found = download_weights(info, progress=progress)
        return found
    return verify_weights(found, info, check_hash=check_hash)


def load_state_dict(path: str | os.PathLike) -> dict:
    """``torch.load`` a state dict on the CPU, tensors only (``weights_only=True``)."""
    import torch

    try:
        sd = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, ...
        raise WeightsError(f"cannot read the weights file {path}: {exc}") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return sd


def load_colorizer(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    device="cpu",
    download: bool = True,
    progress: ProgressCallback | None = None,
):
    """A pretrained colorizer in eval mode on ``device``.

    Parameters
    ----------
    name : {"eccv16", "siggraph17"}
    weights : path-like, optional
        A weight file or a folder holding it; default: search (and download if allowed).
    device : str or torch.device
        The weights are loaded on the CPU, then the model is moved there.
    download : bool
        Allow downloading a missing file.
    progress : callable, optional
        ``progress(bytes_done, bytes_total)`` during a download.

    Raises
    ------
    WeightsError
        When the weights cannot be found, downloaded, read or matched to the network.
    """
    from .networks import build_colorizer

    net = build_colorizer(name)
    path = get_weights(name, weights, download=download, progress=progress)
    sd = load_state_dict(path)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match the {name} network: {exc}") from exc
    return net.to(device).eval()
