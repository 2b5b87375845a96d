"""Device resolution and CPU run-time tuning, shared by every torch task."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

__all__ = ["resolve_device", "available_devices", "available_memory", "tune_cpu_allocator"]


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
        return torch.device(available_devices()[0])
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
    elif dev.type == "mps":
        if "mps" not in available_devices():
            raise ValueError(
                "device 'mps' was requested but Apple MPS is not available here; use device='auto' or 'cpu'"
            )
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'")
    return dev


def available_memory(device: torch.device) -> int | None:
    """Free memory in bytes usable by ``device`` (None when it cannot be told)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


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
