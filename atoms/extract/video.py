"""Video (ffmpeg): frames at a fixed rate → VIDEO_FRAME parts, the audio track → AUDIO parts.

Frames are decoded by ``ffmpeg -vf fps=<rate>,scale=...`` into an rgb24 pipe (longest side at
most ``max_side`` px), one frame in memory at a time; each frame is stored as PNG with the
image extractor's pHash, embedding and thumbnail. Frames and audio segments are PART_OF the
video and linked NEXT in time order.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from collections.abc import Iterator

from atoms.extract.audio import (
    SAMPLE_RATE,
    SEGMENT_SECONDS,
    ffprobe,
    iter_ffmpeg_blocks,
    require_tool,
    segment_parts,
)
from atoms.extract.base import (
    VIDEO,
    VIDEO_FRAME,
    ExtractionError,
    Extractor,
    Part,
    Source,
    root_part,
)
from atoms.extract.image import EMBEDDING_KIND as IMAGE_EMBEDDING_KIND
from atoms.extract.image import image_features

DEFAULT_FPS = 1.0
DEFAULT_MAX_SIDE = 512


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even dimensions with the longest side at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def iter_frames(path, width: int, height: int, fps: float) -> Iterator[bytes]:
    """Raw rgb24 frames (height*width*3 bytes each) sampled at ``fps``."""
    cmd = [require_tool("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-an",
           "-vf", f"fps={fps},scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "pipe:1"]
    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            while True:
                raw = proc.stdout.read(frame_bytes)
                if len(raw) < frame_bytes:
                    break
                yield raw
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            tail = err.read()[-500:].decode("utf-8", "replace").strip()
            raise ExtractionError("video.corrupt", f"ffmpeg could not decode {path}: {tail}")


class VideoExtractor(Extractor):
    name = "video"
    modalities = (VIDEO,)

    def __init__(self, fps: float = DEFAULT_FPS, max_side: int = DEFAULT_MAX_SIDE,
                 segment_seconds: float = SEGMENT_SECONDS):
        self.fps, self.max_side, self.segment_seconds = fps, max_side, segment_seconds

    def run(self, source: Source) -> Iterator[Part]:
        with source.as_path() as path:
            try:
                probe = ffprobe(path)
            except ValueError as exc:
                raise ExtractionError("video.corrupt", f"{source.name}: {exc}") from None
            streams = probe.get("streams", [])
            vstream = next((s for s in streams if s.get("codec_type") == "video"), None)
            has_audio = any(s.get("codec_type") == "audio" for s in streams)
            if vstream is None or not vstream.get("width"):
                raise ExtractionError("video.corrupt", f"{source.name}: no video stream")
            width, height = int(vstream["width"]), int(vstream["height"])
            root = root_part(
                source, width=width, height=height, codec=vstream.get("codec_name"),
                duration=float(probe.get("format", {}).get("duration") or 0) or None,
                has_audio=has_audio, frame_rate=self.fps,
            )
            yield root
            yield from self._frames(root, path, *scaled_size(width, height, self.max_side))
            if has_audio:
                blocks = iter_ffmpeg_blocks(path, int(self.segment_seconds * SAMPLE_RATE), what="video")
                yield from segment_parts(root, blocks, seconds=self.segment_seconds)

    def _frames(self, root: Part, path, width: int, height: int) -> Iterator[Part]:
        from PIL import Image

        prev = None
        for index, raw in enumerate(iter_frames(path, width, height, self.fps)):
            img = Image.frombytes("RGB", (width, height), raw)
            feats = image_features(img)
            png = io.BytesIO()
            img.save(png, format="PNG")
            key = f"frame:{index}"
            yield root.child(
                key, modality=VIDEO_FRAME, mime="image/png", content=png.getvalue(),
                position=index, prev=prev, time_start=index / self.fps,
                time_end=(index + 1) / self.fps, embedding=feats["embedding"],
                thumbnail=feats["thumbnail"],
                metadata={"width": width, "height": height, "phash": feats["phash"],
                          "embedding_kind": IMAGE_EMBEDDING_KIND},
            )
            prev = key
