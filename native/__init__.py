"""Hartonomous numeric core: vector search, analytics aggregates and model math.

No Django import anywhere in this package. `backend()` says which implementation runs.
"""
from ._backend import backend, c_available, cupy_available

__all__ = ["backend", "c_available", "cupy_available"]
