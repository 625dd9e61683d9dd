"""Which backend runs a call: in auto mode a GPU takes only batched work, a forced backend takes all."""
from __future__ import annotations

import numpy as np
import pytest

import native
from native import _backend
from native import vector as vec


@pytest.fixture
def gpu_present(monkeypatch):
    """A machine where CuPy finds a device (the hardware probe is the only thing replaced)."""
    monkeypatch.setattr(_backend, "cupy_available", lambda: True)


needs_c = pytest.mark.skipif(not native.c_available(), reason="C extension not built")


@needs_c
def test_auto_mode_keeps_small_work_on_the_c_core(gpu_present, monkeypatch):
    monkeypatch.setenv("HARTONOMOUS_NATIVE_BACKEND", "auto")
    assert _backend.backend() == "cupy"
    assert _backend.backend_for("small") == "c"
    assert _backend.backend_for("batched") == "cupy"
    assert vec._impl() is vec._CKernels


@needs_c
def test_auto_mode_sends_only_many_queries_to_the_gpu(gpu_present, monkeypatch):
    monkeypatch.setenv("HARTONOMOUS_NATIVE_BACKEND", "auto")
    assert vec._search_work(np.zeros((vec.GPU_MIN_QUERIES - 1, 4), np.float32)) == "small"
    assert vec._search_work(np.zeros((vec.GPU_MIN_QUERIES, 4), np.float32)) == "batched"


def test_a_forced_backend_runs_everything(gpu_present, monkeypatch):
    monkeypatch.setenv("HARTONOMOUS_NATIVE_BACKEND", "cupy")
    assert _backend.backend_for("small") == "cupy"
    monkeypatch.setenv("HARTONOMOUS_NATIVE_BACKEND", "reference")
    assert _backend.backend_for("batched") == "reference"


def test_without_a_gpu_auto_mode_never_picks_cupy(monkeypatch):
    monkeypatch.setattr(_backend, "cupy_available", lambda: False)
    monkeypatch.setenv("HARTONOMOUS_NATIVE_BACKEND", "auto")
    assert _backend.backend_for("batched") in ("c", "reference")
