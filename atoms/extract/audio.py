"""Audio: decode → 16 kHz mono → fixed 5 s segments → log-mel features and an embedding.

Decoding streams: WAV/FLAC/OGG through soundfile in blocks of one segment (resampled per
block with a polyphase filter), everything else (MP3, M4A, a video's audio track) through an
``ffmpeg`` pipe that already outputs 16 kHz mono s16le. Memory is one segment at a time.

Log-mel spectrogram: 25 ms Hann windows (400 samples) every 10 ms (160), power spectrum of a
400-point real FFT, 64 triangular mel filters (HTK mel scale, 0–8 kHz), natural log of
max(energy, 1e-10). Shape (frames, 64).

Embedding ``audio-logmel-stats-256-v1`` (256 float32, unit L2 norm): per segment, the mean and
standard deviation over time of the 64 log-mel bands, then of their deltas (first
difference along time, ``np.gradient``), concatenated [mean, std, Δmean, Δstd] and L2-normalised.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from atoms.extract.base import AUDIO, ExtractionError, Extractor, Part, Source, root_part

SAMPLE_RATE = 16_000
SEGMENT_SECONDS = 5.0
N_FFT, HOP, N_MELS = 400, 160, 64
EMBEDDING_KIND = "audio-logmel-stats-256-v1"
EMBEDDING_DIM = 4 * N_MELS
SOUNDFILE_MIMES = {"audio/wav", "audio/flac", "audio/ogg"}


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular filters (n_mels, n_fft // 2 + 1) on the HTK mel scale, 0 Hz to sr/2."""
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel_spectrogram(samples: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(frames, 64) float32 log-mel energies of mono float samples in [-1, 1]."""
    x = np.asarray(samples, dtype=np.float32)
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    n_frames = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:n_frames]  # (F, N_FFT)
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (F, N_FFT//2+1)
    mel = power @ mel_filterbank(sr).T  # (F, 64)
    return np.log(np.maximum(mel, 1e-10)).astype(np.float32)


def audio_embedding(samples: np.ndarray) -> np.ndarray:
    """The documented 256-d segment embedding (float32, unit norm)."""
    feats = log_mel_spectrogram(samples)  # (F, 64)
    delta = np.gradient(feats, axis=0) if len(feats) > 1 else np.zeros_like(feats)
    vec = np.concatenate([feats.mean(0), feats.std(0), delta.mean(0), delta.std(0)])
    return (vec / max(float(np.linalg.norm(vec)), 1e-12)).astype(np.float32)


def wav_bytes(samples: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV of float samples."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def check_wav_complete(source: Source) -> None:
    """A WAV whose data chunk claims more bytes than the file holds is truncated."""
    head = source.head(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if cid == b"data":
            if source.size is not None and pos + 8 + size > source.size:
                raise ExtractionError("audio.truncated",
                                      f"{source.name}: data chunk says {size} bytes, file holds "
                                      f"{source.size - pos - 8}")
            return
        pos += 8 + size + (size & 1)
    raise ExtractionError("audio.truncated", f"{source.name}: WAV header without a data chunk")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ExtractionError("tool.missing", f"{name} is not installed (apt-get install ffmpeg)")
    return path


def _resampler(sr: int):
    if sr == SAMPLE_RATE:
        return lambda x: x
    from scipy.signal import resample_poly

    g = math.gcd(sr, SAMPLE_RATE)
    return lambda x: resample_poly(x, SAMPLE_RATE // g, sr // g).astype(np.float32)


def iter_soundfile_blocks(source: Source, block: int) -> Iterator[np.ndarray]:
    """16 kHz mono float32 blocks of ``block`` samples (the last may be shorter)."""
    import soundfile as sf

    try:
        with source.open() as f, sf.SoundFile(f) as snd:
            resample = _resampler(snd.samplerate)
            src_block = int(round(block * snd.samplerate / SAMPLE_RATE))
            for data in snd.blocks(blocksize=src_block, dtype="float32", always_2d=True):
                yield resample(data.mean(axis=1))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ExtractionError("audio.corrupt", f"{source.name}: {exc}") from None


def iter_ffmpeg_blocks(path, block: int, *, what: str = "audio") -> Iterator[np.ndarray]:
    """Decode any ffmpeg-readable file's audio to 16 kHz mono float32 blocks, streaming."""
    cmd = [require_tool("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-vn", "-f", "s16le",
           "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            while raw := proc.stdout.read(block * 2):
                yield np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            tail = err.read()[-500:].decode("utf-8", "replace").strip()
            raise ExtractionError(f"{what}.corrupt", f"ffmpeg could not decode {path}: {tail}")


def ffprobe(path) -> dict:
    """ffprobe's JSON (streams + format); a file it cannot read raises <kind>.corrupt upstream."""
    cmd = [require_tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams",
           "-show_format", str(path)]
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise ValueError(proc.stderr.decode("utf-8", "replace").strip()[-500:] or "ffprobe failed")
    return json.loads(proc.stdout or b"{}")


def segment_parts(root: Part, blocks: Iterator[np.ndarray], *, key_prefix: str = "audio",
                  seconds: float = SEGMENT_SECONDS) -> Iterator[Part]:
    """Regroup PCM blocks into fixed segments and yield one AUDIO part per segment."""
    size = int(seconds * SAMPLE_RATE)
    pending = np.zeros(0, dtype=np.float32)
    index, prev = 0, None

    def make(seg: np.ndarray) -> Part:
        key = f"{key_prefix}:{index}"
        start = index * seconds
        return root.child(
            key, modality=AUDIO, mime="audio/wav", content=wav_bytes(seg), position=index,
            prev=prev, time_start=start, time_end=start + len(seg) / SAMPLE_RATE,
            embedding=audio_embedding(seg),
            metadata={"sample_rate": SAMPLE_RATE, "samples": len(seg),
                      "rms": float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))),
                      "embedding_kind": EMBEDDING_KIND},
        )

    for blk in blocks:
        pending = np.concatenate([pending, blk])
        while len(pending) >= size:
            yield make(pending[:size])
            prev, index = f"{key_prefix}:{index}", index + 1
            pending = pending[size:]
    if len(pending) >= HOP:  # a tail shorter than one hop carries nothing
        yield make(pending)


class AudioExtractor(Extractor):
    name = "audio"
    modalities = (AUDIO,)

    def __init__(self, segment_seconds: float = SEGMENT_SECONDS):
        self.segment_seconds = segment_seconds

    def run(self, source: Source) -> Iterator[Part]:
        block = int(self.segment_seconds * SAMPLE_RATE)
        if source.mime in SOUNDFILE_MIMES:
            if source.mime == "audio/wav":
                check_wav_complete(source)
            meta = self._soundfile_info(source)
            root = root_part(source, **meta)
            yield root
            yield from segment_parts(root, iter_soundfile_blocks(source, block),
                                     seconds=self.segment_seconds)
            return
        with source.as_path() as path:
            try:
                fmt = ffprobe(path).get("format", {})
            except ValueError as exc:
                raise ExtractionError("audio.corrupt", f"{source.name}: {exc}") from None
            root = root_part(source, duration=float(fmt.get("duration") or 0) or None,
                             container=fmt.get("format_name"))
            yield root
            yield from segment_parts(root, iter_ffmpeg_blocks(path, block),
                                     seconds=self.segment_seconds)

    def _soundfile_info(self, source: Source) -> dict:
        import soundfile as sf

        try:
            with source.open() as f:
                info = sf.info(f)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise ExtractionError("audio.corrupt", f"{source.name}: {exc}") from None
        return {"duration": info.duration, "source_sample_rate": info.samplerate,
                "channels": info.channels, "format": info.format, "subtype": info.subtype}
