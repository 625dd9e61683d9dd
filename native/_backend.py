"""Backend selection for native/: cupy when a GPU is present, else the C extension, else NumPy.

HARTONOMOUS_NATIVE_BACKEND=auto|c|cupy|reference forces a choice; asking for a backend that
cannot load raises at import time with a clear message instead of silently falling back.

Inputs and outputs are host (NumPy) arrays, so a GPU call pays for copying its operands over PCIe.
In auto mode `backend_for(work)` therefore sends only "batched" work to the GPU (many queries against
one matrix, k-means with its points kept on the device); everything else runs on the C core, which
measured faster for it on the lent H200 machine (docs/benchmarks_native_vector.md). A forced backend
runs everything.
"""
from __future__ import annotations

import functools
import os

CHOICES = ("auto", "c", "cupy", "reference")


@functools.cache
def cupy_available() -> bool:
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, or no device: all mean "no GPU path"
        return False


@functools.cache
def c_available() -> bool:
    try:
        from . import _core, _quant  # noqa: F401

        return True
    except ImportError:
        return False


def requested() -> str:
    name = os.environ.get("HARTONOMOUS_NATIVE_BACKEND", "auto").strip().lower() or "auto"
    if name not in CHOICES:
        raise ValueError(f"HARTONOMOUS_NATIVE_BACKEND must be one of {CHOICES}, got {name!r}")
    return name


def backend() -> str:
    """The backend in force: 'cupy', 'c' or 'reference'."""
    name = requested()
    if name == "auto":
        if cupy_available():
            return "cupy"
        return "c" if c_available() else "reference"
    if name == "c" and not c_available():
        raise ImportError("HARTONOMOUS_NATIVE_BACKEND=c but the C extension is not built (pip install -e .)")
    if name == "cupy" and not cupy_available():
        raise ImportError("HARTONOMOUS_NATIVE_BACKEND=cupy but no CUDA device/cupy was found")
    return name


def backend_for(work: str = "small") -> str:
    """The backend for one call: `work` is "batched" (worth the copies to a GPU) or "small"."""
    name = backend()
    if name == "cupy" and work != "batched" and requested() == "auto" and c_available():
        return "c"
    return name
