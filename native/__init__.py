"""Hartonomous numeric core: vector search, analytics aggregates and model math.

No Django import anywhere in this package. `backend()` says which implementation runs;
HARTONOMOUS_NATIVE_BACKEND=auto|c|cupy|reference forces one.
"""
from ._backend import backend, c_available, cupy_available
from .modelmath import *  # noqa: F401,F403
from .modelmath import __all__ as _model_all
from .vector import *  # noqa: F401,F403
from .vector import __all__ as _vector_all

__all__ = ["backend", "c_available", "cupy_available", *_vector_all, *_model_all]
