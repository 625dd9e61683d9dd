"""Builds the C extensions of native/ (metadata lives in pyproject.toml)."""
import os
import sys

import numpy
from setuptools import Extension, setup

COMPILE = ["-O3", "-std=c11", "-fopenmp", "-fno-strict-aliasing"]
LINK = ["-fopenmp"]
if sys.platform == "darwin":  # Apple clang has no -fopenmp without libomp
    COMPILE = [f for f in COMPILE if f != "-fopenmp"]
    LINK = []


ONLY = [n for n in os.environ.get("HARTONOMOUS_BUILD_ONLY", "").split(",") if n]


def native_extension(name: str, source: str) -> Extension:
    return Extension(
        f"native.{name}",
        sources=[source],
        include_dirs=[numpy.get_include(), "native"],
        extra_compile_args=COMPILE,
        extra_link_args=LINK,
        depends=[p for p in ("native/_core_kernels.h",) if os.path.exists(p)],
    )


EXTENSIONS = {"_core": "native/_core.c", "_quant": "native/_quant.c"}

setup(
    ext_modules=[
        native_extension(name, source)
        for name, source in EXTENSIONS.items()
        if not ONLY or name in ONLY
    ]
)
