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

Integrity: a file must have the published size and a sha256 that starts with the prefix in
its name (and equals :attr:`WeightsInfo.sha256` where the full hash is pinned).  Only a
32-bit prefix is published, so the first time a file verifies its full sha256 is recorded
beside it, in ``<file>.sha256`` (``sha256sum`` format), and every later load must match that
record (trust on first use: a file damaged or replaced afterwards is refused).  The bytes that
are checked are the bytes that are loaded: :func:`load_colorizer` reads the file once into
memory, verifies that buffer and unpickles the same buffer (``weights_only=True``).

Downloads go to ``<file>.<host>.<pid>.<random>.part`` beside the destination and are renamed
only when complete and verified; see :func:`remove_stale_parts` for when a ``.part`` file left
by a killed process is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import socket
import tempfile
import time
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
    "read_weights",
    "remove_stale_parts",
    "load_state_dict",
    "load_colorizer",
]

#: Environment variable naming a folder that holds the weight files.
ENV_VAR = "NAPARI_DEEP_PRIOR_WEIGHTS"
_CHUNK = 1 << 20
#: A ``.part`` file not written to for this long belongs to no live download (a live one
#: writes at least every ``timeout`` seconds of :func:`download_weights`) and is removed.
STALE_PART_SECONDS = 3600.0
#: Suffix of the trust-on-first-use record of a file's full sha256.
SHA256_SUFFIX = ".sha256"
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
    sha256 : str, optional
        The full sha256 (64 hex digits) when it is known; checked when set.  None: only the
        prefix in the file name is checked, plus the record made on first use (see the module
        docstring).
    """

    name: str
    filename: str
    size: int
    url: str
    sha256: str | None = None

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


def _size_error(p: Path, size: int, info: WeightsInfo) -> WeightsError:
    return WeightsError(
        f"{p} has {size:,} bytes but {info.filename} has {info.size:,}: the file is "
        f"incomplete or not the right one. Delete it and download it again.\n" + _how_to_fix(info, p.parent)
    )


def _sidecar(p: Path) -> Path:
    return p.with_name(p.name + SHA256_SUFFIX)


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_digest(p: Path, digest: str, info: WeightsInfo) -> None:
    """Raise unless ``digest`` (the sha256 of ``p``'s bytes) is what ``info`` and the record expect;
    record it beside ``p`` on first use."""
    if not digest.startswith(info.hash_prefix):
        raise WeightsError(
            f"{p} has sha256 {digest[:16]}..., which does not start with "
            f"{info.hash_prefix} as its published name {info.filename} says: the file "
            f"is damaged. Delete it and download it again.\n" + _how_to_fix(info, p.parent)
        )
    if info.sha256 is not None and digest != info.sha256.lower():
        raise WeightsError(
            f"{p} has sha256 {digest}, not the published {info.sha256.lower()}: the file is "
            f"damaged or not the right one. Delete it and download it again.\n" + _how_to_fix(info, p.parent)
        )
    record = _sidecar(p)
    try:
        text = record.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        _write_record(p, digest)  # trust on first use
        return
    except OSError:
        return  # unreadable record: the checks above stand
    fields = text.split()
    recorded = fields[0].lower() if fields else ""
    if not _HEX64.match(recorded):
        raise WeightsError(
            f"{record} should hold the sha256 of {p.name} (64 hex digits) but holds {text[:40]!r}. "
            f"Delete {record} (it is made again from the file the next time it verifies)."
        )
    if recorded != digest:
        raise WeightsError(
            f"{p} has changed since it was first verified: its sha256 is {digest[:16]}..., but "
            f"{record} recorded {recorded[:16]}... The file is damaged or was replaced. Delete "
            f"{p.name} and {record.name} and download it again (if you replaced the file on purpose "
            f"with another copy of {info.filename}, delete {record.name} only).\n" + _how_to_fix(info, p.parent)
        )


def _write_record(p: Path, digest: str) -> None:
    """Write ``<p>.sha256`` (``sha256sum`` format); a folder we cannot write to keeps no record."""
    from ..io import atomic_output

    try:
        with atomic_output(_sidecar(p)) as tmp:
            tmp.write_text(f"{digest}  {p.name}\n", encoding="ascii")
    except OSError:
        pass  # e.g. a read-only shared folder of weights: the published prefix still protects it


def read_weights(path: str | os.PathLike, name: str | WeightsInfo) -> bytes:
    """The bytes of a weight file, read once and verified (size, sha256 prefix, full sha256).

    Load from the returned bytes (:func:`load_state_dict`): the bytes checked are the bytes
    used, whatever happens to the file meanwhile.

    Raises
    ------
    WeightsError
        Naming the file, what was expected and what to do.
    """
    info = weights_info(name)
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size != info.size:
                raise _size_error(p, size, info)
            data = fh.read(info.size + 1)
    except OSError as exc:
        raise WeightsError(f"cannot read the weights file {p}: {exc.strerror or exc}") from exc
    if len(data) != info.size:  # the file changed while it was read
        raise _size_error(p, len(data), info)
    _check_digest(p, hashlib.sha256(data).hexdigest(), info)
    return data


def verify_weights(path: str | os.PathLike, name: str | WeightsInfo, *, check_hash: bool = True) -> Path:
    """Check a weight file's size and (optionally) its sha256 (see the module docstring).

    The hash of an unchanged file (same size and modification time) is computed once per process.

    Raises
    ------
    WeightsError
        Naming the file, what was expected and what to do.
    """
    info = weights_info(name)
    p = Path(path)
    st = p.stat()
    if st.st_size != info.size:
        raise _size_error(p, st.st_size, info)
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, info.hash_prefix)
    if check_hash and key not in _VERIFIED:
        _check_digest(p, _sha256(p), info)
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


# -- temporary files of downloads ------------------------------------------------------------------


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname() or "host")


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (True when it cannot be told)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # another user's process, or a platform that cannot tell: assume alive
    return True


def remove_stale_parts(folder: str | os.PathLike, name: str | WeightsInfo) -> list[Path]:
    """Remove the ``.part`` files that interrupted downloads of ``name`` left in ``folder``.

    A download writes ``<file>.<host>.<pid>.<random>.part``.  Such a file is stale, and
    removed, when

    * it was made on this machine (same host name) by a process that no longer exists (a
      download killed by SIGKILL, by SIGTERM in a helper thread, or by a power cut), or
    * it has not been written to for :data:`STALE_PART_SECONDS` (an hour): a live download
      writes every few seconds (it gives up after ``timeout`` seconds without data), so this
      also covers a folder shared between machines, a re-used process id, and the ``.part``
      files of older versions (``<file>.<random>.part``).

    A ``.part`` file of a live process on this machine, or a recent one from another machine,
    is left alone (two downloads at once each write their own).  Only files named after this
    weight file are looked at; errors (a read-only folder, a file gone meanwhile) are ignored.

    Returns
    -------
    list of Path
        The files removed.
    """
    info = weights_info(name)
    folder = Path(folder)
    removed: list[Path] = []
    head = info.filename + "."
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(head) and p.name.endswith(".part")]
    except OSError:
        return removed
    host, now = _host(), time.time()
    for part in candidates:
        try:
            age = now - part.stat().st_mtime
        except OSError:
            continue
        stale = age > STALE_PART_SECONDS
        fields = part.name[len(head) : -len(".part")].rsplit(".", 2)
        if not stale and len(fields) == 3 and fields[0] == host and fields[1].isdigit():
            stale = not _pid_alive(int(fields[1]))
        if stale:
            with contextlib.suppress(OSError):
                part.unlink()
                removed.append(part)
    return removed


class _Terminated(BaseException):
    """SIGTERM arrived during a download (raised to run the clean-up, then the process dies of it)."""


@contextlib.contextmanager
def _die_cleanly_on_sigterm():
    """Within the block, SIGTERM runs the ``finally`` clauses before the process dies of it.

    Only in the main thread and only while SIGTERM has its default action (die at once): an
    application's own handler is left alone, and a helper thread cannot install one (a
    ``.part`` file such a kill leaves is removed by the next download, see
    :func:`remove_stale_parts`).
    """
    import signal
    import threading

    sig = getattr(signal, "SIGTERM", None)
    if (
        sig is None
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(sig) is not signal.SIG_DFL
    ):
        yield
        return

    def handler(signum, frame):
        raise _Terminated()

    signal.signal(sig, handler)
    try:
        yield
    except _Terminated:
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)  # die of it, as SIGTERM would have done
        raise  # pragma: no cover - not reached where SIGTERM kills
    finally:
        signal.signal(sig, signal.SIG_DFL)


_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _folder_error(info: WeightsInfo, folder: Path, exc: OSError) -> WeightsError:
    why = {
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is exceeded",
    }.get(exc.errno, exc.strerror or str(exc))
    return WeightsError(
        f"cannot download {info.filename} into {folder}: {why}. Set the environment variable "
        f"{ENV_VAR} to a folder you can write to, or download the file yourself and pass its path "
        f"as weights=... .\n" + _how_to_fix(info, folder)
    )


def download_weights(
    name: str | WeightsInfo,
    folder: str | os.PathLike | None = None,
    *,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download a weight file into ``folder`` and verify it.

    The data go to a temporary ``.part`` file in the same folder, which is renamed only after
    the size and the sha256 have been checked, so an interrupted download never leaves a file
    that looks complete.  At most the published size is read; a server sending more is an
    error.  The ``.part`` file is removed on any error, on KeyboardInterrupt and (in the main
    thread) on SIGTERM; stale ones left by killed processes are removed first
    (:func:`remove_stale_parts`).  The full sha256 of the file is recorded beside it.

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
        When offline, when the server refuses, when the folder cannot be written, or when the
        data do not verify.
    """
    info = weights_info(name)
    dest_dir = Path(folder).expanduser() if folder is not None else search_folders()[0]
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _folder_error(info, dest_dir, exc) from exc
    remove_stale_parts(dest_dir, info)
    dest = dest_dir / info.filename
    with _die_cleanly_on_sigterm():
        try:
            fd, tmp_name = tempfile.mkstemp(
                prefix=f"{info.filename}.{_host()}.{os.getpid()}.", suffix=".part", dir=dest_dir
            )
        except OSError as exc:
            raise _folder_error(info, dest_dir, exc) from exc
        tmp = Path(tmp_name)
        try:
            digest = _fetch(info, fd, dest_dir, progress, timeout)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        _write_record(dest, digest)  # a fresh, verified download is the new first use
        st = dest.stat()
        _VERIFIED.add((str(dest.resolve()), st.st_size, st.st_mtime_ns, info.hash_prefix))
    return dest


def _fetch(info: WeightsInfo, fd: int, dest_dir: Path, progress: ProgressCallback | None, timeout: float) -> str:
    """Stream ``info.url`` into the open file ``fd`` (closed here); return the verified sha256."""
    h = hashlib.sha256()
    done = 0
    with os.fdopen(fd, "wb") as out:
        try:
            resp_cm = _urlopen(info.url, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise _offline_error(info, dest_dir, exc) from exc
        with resp_cm as resp:
            headers = getattr(resp, "headers", None)
            announced = headers.get("Content-Length") if headers is not None else None
            if announced is not None and str(announced).strip().isdigit() and int(announced) != info.size:
                raise WeightsError(
                    f"the server announces {int(announced):,} bytes for {info.filename}, which has "
                    f"{info.size:,}: the URL serves another file.\n" + _how_to_fix(info, dest_dir)
                )
            if progress is not None:
                progress(0, info.size)
            while done < info.size:
                try:
                    chunk = resp.read(min(_CHUNK, info.size - done))
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    raise _offline_error(info, dest_dir, exc) from exc
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _folder_error(info, dest_dir, exc) from exc
                h.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, info.size)
            if done == info.size:
                try:
                    extra = resp.read(1)
                except (urllib.error.URLError, OSError, ValueError):
                    extra = b""
                if extra:
                    raise WeightsError(
                        f"the server sent more than the {info.size:,} bytes of {info.filename}: the URL "
                        f"serves another file.\n" + _how_to_fix(info, dest_dir)
                    )
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            raise _folder_error(info, dest_dir, exc) from exc
    if done != info.size:
        raise WeightsError(
            f"the download of {info.filename} gave {done:,} bytes instead of {info.size:,}.\n"
            + _how_to_fix(info, dest_dir)
        )
    digest = h.hexdigest()
    if not digest.startswith(info.hash_prefix) or (info.sha256 is not None and digest != info.sha256.lower()):
        want = info.sha256.lower() if info.sha256 is not None else info.hash_prefix + "..."
        raise WeightsError(
            f"the downloaded {info.filename} has sha256 {digest[:16]}..., not {want}: the download "
            f"is damaged.\n" + _how_to_fix(info, dest_dir)
        )
    return digest


def _offline_error(info: WeightsInfo, dest_dir: Path, exc: BaseException) -> WeightsError:
    return WeightsError(
        f"could not download {info.filename} from {info.url} ({exc}); this machine "
        f"may be offline.\n" + _how_to_fix(info, dest_dir)
    )


def get_weights(
    name: str | WeightsInfo,
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: ProgressCallback | None = None,
    check_hash: bool = True,
) -> Path:
    """Path of a verified weight file: found (see :func:`find_weights`) or downloaded.

    A download goes to the first of :func:`search_folders` that can be written to.

    Raises
    ------
    WeightsError
        If the file is not found and ``download`` is False or the download fails (or no
        folder can be written), or if the file found does not verify.
    """
    info = weights_info(name)
    if path is None:
        for folder in search_folders():
            remove_stale_parts(folder, info)
    found = find_weights(info, path)
    if found is None:
        if not download:
            raise WeightsError(
                f"{info.filename} was not found in {', '.join(str(f) for f in search_folders())}.\n" + _how_to_fix(info)
            )
        folders = search_folders()
        for k, folder in enumerate(folders):
            try:
                return download_weights(info, folder, progress=progress)
            except WeightsError as exc:
                cause = exc.__cause__
                writable = not (isinstance(cause, OSError) and cause.errno in _NOT_WRITABLE)
                if writable or k == len(folders) - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
    return verify_weights(found, info, check_hash=check_hash)


def load_state_dict(source: str | os.PathLike | bytes, *, origin: str | os.PathLike | None = None) -> dict:
    """``torch.load`` a state dict on the CPU, tensors only (``weights_only=True``).

    Parameters
    ----------
    source : path-like or bytes
        A file, or the bytes of one (as :func:`read_weights` returns them).
    origin : path-like, optional
        The file the bytes came from, for the messages.
    """
    import torch

    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    what = f"the weights file {origin if origin is not None else ('(in memory)' if in_memory else source)}"
    try:
        if in_memory:
            sd = torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
        else:
            sd = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, ...
        raise WeightsError(f"cannot read {what}: {exc}") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightsError(f"{what} does not hold a state dict (got {type(sd).__name__})")
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
    # find (or download) the file, then verify the very bytes that are unpickled
    path = get_weights(name, weights, download=download, progress=progress, check_hash=False)
    data = read_weights(path, name)
    sd = load_state_dict(data, origin=path)
    del data
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match the {name} network: {exc}") from exc
    return net.to(device).eval()
