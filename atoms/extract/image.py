"""Images (Pillow): decode, thumbnail, perceptual hash and a deterministic feature embedding.

Perceptual hash (pHash, 64 bits): grayscale, resize to 32×32 (Lanczos), 2-D DCT-II
(orthonormal), keep the top-left 8×8 block, bit = coefficient > median of the block without the
DC term; bits row-major, most significant first, as 16 hex digits.

Embedding ``image-hist-dct-256-v1`` (256 float32, unit L2 norm):
  * 64: joint RGB histogram, 4 bins per channel, normalised to sum 1, square-rooted
    (Hellinger), then L2-normalised;
  * 192: 2-D DCT of the 32×32 grayscale image scaled to [0, 1], the first 193 coefficients in
    JPEG zig-zag order without the DC term, L2-normalised;
  * both halves divided by √2, so the whole vector has norm 1 (a blank half stays zero).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from atoms.extract.base import IMAGE, ExtractionError, Extractor, Part, Source, root_part

EMBEDDING_KIND = "image-hist-dct-256-v1"
EMBEDDING_DIM = 256
THUMBNAIL_SIZE = 128
MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb limit


@lru_cache(maxsize=4)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (n, n): ``C @ x`` is the DCT of x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c


def dct2(a: np.ndarray) -> np.ndarray:
    c = dct_matrix(a.shape[0])
    return c @ a @ c.T


@lru_cache(maxsize=2)
def zigzag_order(n: int) -> np.ndarray:
    """Flat indices of an n×n block in JPEG zig-zag order."""
    idx = sorted(((i, j) for i in range(n) for j in range(n)),
                 key=lambda p: (p[0] + p[1], p[0] if (p[0] + p[1]) % 2 else p[1]))
    return np.array([i * n + j for i, j in idx])


def _gray32(img) -> np.ndarray:
    from PIL import Image

    g = img.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    return np.asarray(g, dtype=np.float64) / 255.0  # (32, 32)


def phash(img) -> str:
    coeffs = dct2(_gray32(img))[:8, :8]
    flat = coeffs.flatten()
    median = np.median(flat[1:])
    bits = flat > median
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def image_embedding(img) -> np.ndarray:
    """The documented 256-d feature vector (float32, unit norm)."""
    rgb = np.asarray(img.convert("RGB").resize((64, 64)), dtype=np.uint8)  # (64, 64, 3)
    q = (rgb // 64).astype(np.int64)
    hist = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64)
    hist = _unit(np.sqrt(hist / hist.sum()))
    dct = dct2(_gray32(img)).ravel()[zigzag_order(32)[1:193]]
    vec = np.concatenate([hist, _unit(dct)]) / np.sqrt(2.0)
    return vec.astype(np.float32)


def thumbnail_png(img, size: int = THUMBNAIL_SIZE) -> bytes:
    thumb = img.copy()
    thumb.thumbnail((size, size))
    if thumb.mode not in ("RGB", "RGBA", "L", "LA"):
        thumb = thumb.convert("RGBA" if "A" in thumb.getbands() else "RGB")
    out = io.BytesIO()
    thumb.save(out, format="PNG", optimize=True)
    return out.getvalue()


def image_features(img) -> dict:
    """phash, embedding and thumbnail of a decoded image."""
    return {"phash": phash(img), "embedding": image_embedding(img), "thumbnail": thumbnail_png(img)}


def load_image(source: Source):
    """Decode fully (so truncation is found now), honour EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with source.open() as f:
            img = Image.open(f)
            fmt, size = img.format, img.size
            if img.width * img.height > MAX_PIXELS:
                raise ExtractionError("image.too_large", f"{source.name} is {img.width}×{img.height}")
            img.draft("RGB", (1024, 1024))  # JPEG decodes at reduced scale: bounded memory
            img.load()
            img = ImageOps.exif_transpose(img)
    except ExtractionError:
        raise
    except Image.DecompressionBombError as exc:
        raise ExtractionError("image.too_large", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise ExtractionError("image.corrupt", f"{source.name}: not a readable image ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ExtractionError("image.corrupt", f"{source.name}: {exc}") from None
    return img, fmt, size


class ImageExtractor(Extractor):
    name = "image"
    modalities = (IMAGE,)

    def run(self, source: Source) -> Iterator[Part]:
        img, fmt, (width, height) = load_image(source)
        feats = image_features(img)
        root = root_part(source, width=width, height=height, mode=img.mode, format=fmt,
                         phash=feats["phash"], embedding_kind=EMBEDDING_KIND)
        root.embedding, root.thumbnail = feats["embedding"], feats["thumbnail"]
        yield root
