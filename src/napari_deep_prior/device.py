"""Device resolution and CPU run-time tuning, shared by every torch task."""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "SMALL_FIT_PIXELS",
    "TILE_FIT_PIXELS",
    "fit_threads",
    "one_thread_fit",
    "MemoryLimit",
    "available_devices",
    "available_memory",
    "cpu_memory_limit",
    "memory_cap",
    "memory_limit",
    "resolve_device",
    "tune_cpu_allocator",
]


def available_devices() -> list[str]:
    """Names of the devices usable here, "cpu" always last."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn "auto" (cuda, then mps, then cpu), a name or a torch.device into a usable device.

    Raises
    ------
    ValueError
        If the named device does not exist or is not available on this machine.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        first = available_devices()[0]
        return torch.device("cuda", _worker_gpu()) if first == "cuda" else torch.device(first)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "device 'cuda' was requested but no CUDA GPU is available here; use device='auto' or 'cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        if dev.index is None:
            dev = torch.device("cuda", _worker_gpu())
    elif dev.type == "mps":
        if "mps" not in available_devices():
            raise ValueError(
                "device 'mps' was requested but Apple MPS is not available here; use device='auto' or 'cpu'"
            )
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'")
    return dev


def _dask_worker():
    """The dask.distributed worker running this code, or None (distributed never imported here)."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # not inside a worker's task
        return None


def _worker_gpu() -> int:
    """The CUDA device of this process: 0, or in a dask worker the GPU assigned to it.

    CUDA_VISIBLE_DEVICES is honoured by CUDA itself (device 0 is the first one it lists).
    A dask worker whose environment sets CUDA_VISIBLE_DEVICES (dask-cuda puts each worker's
    own GPU first) uses device 0; a worker of a cluster started without it (a LocalCluster of
    N workers on a machine with G GPUs) uses GPU ``name % G`` when its name is a number, so
    the workers spread over the GPUs, one per worker.
    """
    worker = _dask_worker()
    if worker is None or os.environ.get("CUDA_VISIBLE_DEVICES"):
        return 0
    n = torch.cuda.device_count()
    try:
        ordinal = int(worker.name)
    except (TypeError, ValueError):
        return 0
    return ordinal % n if n > 0 else 0


#: Where the kernel's process and cgroup files are read (tests point these at fake trees).
PROC_ROOT = "/proc"
CGROUP_ROOT = "/sys/fs/cgroup"

#: Limits at or above this many bytes mean "no limit" (cgroup v1 writes 2**63 rounded to a page).
_UNLIMITED = 2**60


@dataclass(frozen=True)
class MemoryLimit:
    """The memory a device can still allocate, and what bounds it.

    Attributes
    ----------
    available : int
        Bytes that can still be allocated (never negative).
    kind : {"ram", "cgroup", "ulimit", "dask", "gpu"}
        The bound: the RAM available (``MemAvailable``), the memory limit of the process's
        cgroup (a container, a SLURM job, a systemd unit), the address-space limit of the
        process (``ulimit -v``, ``RLIMIT_AS``), the ``memory_limit`` of a dask worker (the one
        running this code, or the smallest one of the cluster the work is planned for) or the
        GPU's free memory.
    limit : int or None
        The bound's total (the cgroup's limit, the address-space limit, the GPU's memory).
    """

    available: int
    kind: str
    limit: int | None = None

    def describe(self) -> str:
        """What bounds the memory, for messages ("the address-space limit (ulimit -v) of 4.0 GiB")."""
        if self.limit is None:
            return {"ram": "the RAM available", "gpu": "the free memory of the GPU"}.get(self.kind, self.kind)
        size = f"{self.limit / 2**30:.1f} GiB"
        if self.kind == "cgroup":
            return f"the memory limit of {size} of this process's cgroup: its container or batch job"
        if self.kind == "ulimit":
            reserved = max(0, self.limit - self.available) / 2**30
            return (
                f"the address-space limit (ulimit -v) of {size}, {reserved:.1f} GiB of it already "
                "reserved by the process"
            )
        if self.kind == "gpu":
            return f"the free memory of the GPU of {size}"
        if self.kind == "dask":
            return f"the memory limit of {size} of a dask worker"
        return self.kind


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError, MemoryError):  # MemoryError: under a spent ulimit -v
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None  # "max" (cgroup v2: no limit) or an unreadable value


def _stat_value(path: Path, key: str) -> int:
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return 0


def _ram_available(proc: Path) -> MemoryLimit | None:
    for line in (_read(proc / "meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return MemoryLimit(int(line.split()[1]) * 1024, "ram")
    try:
        return MemoryLimit(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "ram")
    except (ValueError, OSError, AttributeError):
        pass
    try:  # Windows, and systems without these sysconf names: psutil when it is installed
        import psutil

        return MemoryLimit(int(psutil.virtual_memory().available), "ram")
    except (ImportError, OSError, AttributeError):
        return None


def _dask_worker_available() -> MemoryLimit | None:
    """A dask worker's ``memory_limit`` minus the worker process's resident memory."""
    worker = _dask_worker()
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if not limit:
        return None
    try:
        import psutil

        rss = psutil.Process().memory_info().rss
    except (ImportError, OSError):
        rss = 0
    return MemoryLimit(max(0, int(limit) - int(rss)), "dask", int(limit))


#: A bound set by the caller for the code it runs (:func:`memory_cap`): the smallest worker of
#: a dask cluster when the work is planned on the client but runs on the workers.
_CAP: contextvars.ContextVar[MemoryLimit | None] = contextvars.ContextVar("napari_deep_prior_memory_cap", default=None)


@contextlib.contextmanager
def memory_cap(limit: MemoryLimit | None) -> Iterator[None]:
    """Plan with at most ``limit`` of CPU memory inside the block (None: no cap).

    The memory planner (tile sizes, the too-large refusal) of work prepared here but run
    elsewhere (on dask workers) then respects where it runs.
    """
    token = _CAP.set(limit)
    try:
        yield
    finally:
        _CAP.reset(token)


def _cgroup_available(proc: Path, root: Path) -> MemoryLimit | None:
    """The tightest cgroup memory limit over the process's cgroup and its ancestors.

    cgroup v2: ``memory.max`` minus ``memory.current``; v1: ``memory.limit_in_bytes`` minus
    ``memory.usage_in_bytes``.  The usage counts the page cache; its inactive part, which the
    kernel reclaims before it fails an allocation, is counted as free (as ``docker stats`` and
    the kubelet do).
    """
    v1_path = v2_path = None
    for line in (_read(proc / "self" / "cgroup") or "").splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        if "memory" in parts[1].split(","):
            v1_path = parts[2]
        elif parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
    if v1_path is not None:  # the memory controller is mounted as cgroup v1
        base = root / "memory"
        files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        path = v1_path
    elif v2_path is not None:
        base = root
        files = ("memory.max", "memory.current", "inactive_file")
        path = v2_path
    else:
        return None
    here = base / path.lstrip("/")
    if not here.is_dir():  # a container sees its own cgroup at the root of the mount
        here = base
    best = None
    while True:
        limit = _read_int(here / files[0])
        usage = _read_int(here / files[1])
        if limit is not None and limit < _UNLIMITED and usage is not None:
            used = max(0, usage - _stat_value(here / "memory.stat", files[2]))
            avail = max(0, limit - used)
            if best is None or avail < best.available:
                best = MemoryLimit(avail, "cgroup", limit)
        if here == base or base not in here.parents:
            break
        here = here.parent
    return best


def _address_space_available(proc: Path) -> MemoryLimit | None:
    """``RLIMIT_AS`` (``ulimit -v``) minus the process's virtual size, when there is a limit."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0 or soft >= _UNLIMITED:
        return None
    vm = 0
    for line in (_read(proc / "self" / "status") or "").splitlines():
        if line.startswith("VmSize:"):
            vm = int(line.split()[1]) * 1024
            break
    return MemoryLimit(max(0, soft - vm), "ulimit", soft)


def cpu_memory_limit(proc_root: str | os.PathLike | None = None, cgroup_root: str | os.PathLike | None = None):
    """The memory this process can still allocate: the smallest of the bounds that apply.

    The RAM available (``MemAvailable`` of ``/proc/meminfo``; elsewhere ``sysconf`` or
    psutil), the cgroup's memory limit minus its usage (a container, a SLURM job or a systemd
    unit; cgroup v1 and v2), the address-space limit (``ulimit -v``) minus the process's
    virtual size, inside a dask worker its ``memory_limit`` minus the worker's resident
    memory, and a cap set by :func:`memory_cap`.

    Parameters
    ----------
    proc_root, cgroup_root : path, optional
        Where ``/proc`` and ``/sys/fs/cgroup`` are (default :data:`PROC_ROOT`,
        :data:`CGROUP_ROOT`; tests give fake trees).

    Returns
    -------
    MemoryLimit or None
        None when none of the bounds can be read.
    """
    proc = Path(PROC_ROOT if proc_root is None else proc_root)
    root = Path(CGROUP_ROOT if cgroup_root is None else cgroup_root)
    bounds = (
        _ram_available(proc),
        _cgroup_available(proc, root),
        _address_space_available(proc),
        _dask_worker_available(),
        _CAP.get(),
    )
    found = [b for b in bounds if b]
    return min(found, key=lambda b: b.available) if found else None


def memory_limit(device: torch.device) -> MemoryLimit | None:
    """The memory ``device`` can still allocate and what bounds it (None when it cannot be told)."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return MemoryLimit(int(free), "gpu", int(total))
    if device.type == "cpu":
        return cpu_memory_limit()
    return None


def available_memory(device: torch.device) -> int | None:
    """Free memory in bytes usable by ``device`` (None when it cannot be told).

    On the CPU the smallest of the RAM available, the cgroup's limit and the address-space
    limit (see :func:`cpu_memory_limit`); on a CUDA GPU its free memory.
    """
    limit = memory_limit(device)
    return None if limit is None else limit.available


_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep glibc from unmapping and re-mapping the large activation buffers every step.

    DIP fits allocate and free the same large tensors at every step; glibc serves them with
    mmap/munmap, paying hundreds of thousands of page faults per step. Disabling mmap for
    large blocks and raising the trim threshold makes a CPU step 1.7-2x faster with
    identical results; the process then keeps its peak memory. Applied once per process,
    on Linux with glibc only. Set NAPARI_DEEP_PRIOR_NO_MALLOPT=1 to opt out.
    """
    global _TUNED
    if _TUNED:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("NAPARI_DEEP_PRIOR_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
    _TUNED = ok
    return ok


#: Fits of at most this many pixels per plane run on one intra-op thread: on 2 cores a 128x128
#: step is as fast on one thread as on two (0.077 s against 0.078-0.089 s) and is not slowed by a
#: second busy process (1.1x), while 256x256 is 1.26x faster on two (benchmarks/contention.py).
SMALL_FIT_PIXELS = 180 * 180
#: Tiles of a plane (a plane is tiled into at least 2 x 2) of at most this many pixels run on one
#: intra-op thread too, so that a plane's tiles run side by side, one per core ("lanes"): a
#: 512 px RGB plane's 4 tiles of 288 px took 417 s for F16 and 321 s for kodim02 in 2 lanes of
#: one thread against 590 and 499 s one after another on the 2 threads (2-core AVX-512 CPU; 414
#: against 476 s for kodim02 on an AVX2 one), at the same PSNR (benchmarks/dip_tiles.py; README).
#: The default denoising preset now tiles in 160 px (up to 224 px where those overlap too much);
#: explicit tile sizes up to 288 px run on one thread too.
TILE_FIT_PIXELS = 288 * 288


def one_thread_fit(pixels: int, tile: bool = False) -> bool:
    """Whether a CPU fit of ``pixels`` padded pixels (times its ensemble) runs on one intra-op
    thread: a small fit (:data:`SMALL_FIT_PIXELS`), or a tile of a plane of at most
    :data:`TILE_FIT_PIXELS`."""
    return pixels <= (TILE_FIT_PIXELS if tile else SMALL_FIT_PIXELS)


@contextlib.contextmanager
def fit_threads(device: torch.device, height: int, width: int, tile: bool = False) -> Iterator[int]:
    """The intra-op thread count for one fit of ``height`` x ``width`` pixels on ``device``.

    Small CPU fits, and tiles of a plane up to :data:`TILE_FIT_PIXELS` (``tile``), run on one
    thread (restored afterwards; :func:`one_thread_fit`); larger ones, and GPU fits, keep
    torch's setting.  ``NAPARI_DEEP_PRIOR_NO_THREAD_POLICY=1`` leaves every fit as torch sets it.
    Yields the thread count used.
    """
    n = torch.get_num_threads()
    small = device.type == "cpu" and one_thread_fit(height * width, tile) and n > 1
    if not small or os.environ.get("NAPARI_DEEP_PRIOR_NO_THREAD_POLICY"):
        yield n
        return
    torch.set_num_threads(1)
    try:
        yield 1
    finally:
        torch.set_num_threads(n)
