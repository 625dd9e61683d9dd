"""Plain text and Markdown: structural chunking under a token budget, streamed line by line.

Blocks are paragraphs (split at blank lines), Markdown headings and fenced code blocks. A
heading always starts a new chunk; its path (``Intro > Install``) goes into the metadata of every
chunk under it and is the chunk's first line, so that search sees which section a chunk is from. Blocks are packed into chunks up to ``budget`` tokens; a block
larger than the budget is split at sentence ends, then at word boundaries.

Tokens are counted by a simple word/punctuation regex by default (close to, usually a little
under, MiniLM WordPiece counts); pass ``count_tokens=minilm_token_counter(path)`` to count
with the real tokenizer.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from atoms.extract.base import TEXT, ExtractionError, Extractor, Part, Source, root_part

DEFAULT_BUDGET = 200
MAX_LINE_BYTES = 1 << 16  # a longer line is read in pieces (bounded memory on one-line files)
MAX_BLOCK_CHARS = 1 << 16  # a paragraph longer than this is cut into blocks
_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？])\s+")

TokenCounter = Callable[[str], int]


def count_tokens(text: str) -> int:
    """Approximate token count: runs of word characters and single punctuation marks."""
    return len(_TOKEN_RE.findall(text))


def minilm_token_counter(model_dir: Path | str) -> TokenCounter:
    """Count with the MiniLM WordPiece tokenizer (``tokenizer.json`` in ``model_dir``)."""
    from tokenizers import Tokenizer

    path = Path(model_dir)
    tok = Tokenizer.from_file(str(path if path.suffix == ".json" else next(path.rglob("tokenizer.json"))))
    tok.no_truncation()
    tok.no_padding()
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


@dataclass
class Block:
    text: str
    kind: str  # "heading" | "paragraph" | "code"
    line_start: int  # 1-based, inclusive
    line_end: int
    level: int = 0  # heading level


@dataclass
class Chunk:
    text: str
    heading_path: list[str]
    line_start: int
    line_end: int
    tokens: int


def iter_lines_utf8(source: Source) -> Iterator[str]:
    """Decoded lines (without line ends), streaming; non-UTF-8 bytes raise text.not_utf8."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    first = True
    with source.open() as f:
        for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES), b""), start=1):
            try:
                line = decoder.decode(raw)
            except UnicodeDecodeError as exc:
                raise ExtractionError(
                    "text.not_utf8",
                    f"{source.name} is not UTF-8 text (invalid byte at offset "
                    f"{offset + exc.start}, line {lineno})",
                    offset=offset + exc.start, line=lineno,
                ) from None
            offset += len(raw)
            if first:
                line, first = line.removeprefix("\ufeff"), False
            yield line.rstrip("\r\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ExtractionError("text.not_utf8", f"{source.name} ends inside a UTF-8 character",
                              offset=offset) from None


def iter_blocks(lines: Iterable[str], *, markdown: bool) -> Iterator[Block]:
    """Paragraphs, headings and fenced code blocks with their 1-based line ranges."""
    buf: list[str] = []
    buf_chars = 0
    start = 0
    fence: str | None = None
    lineno = 0
    for lineno, line in enumerate(lines, start=1):
        if fence is not None:
            buf.append(line)
            buf_chars += len(line)
            if line.strip().startswith(fence) or buf_chars > MAX_BLOCK_CHARS:
                yield Block("\n".join(buf), "code", start, lineno)
                buf, buf_chars, start = [], 0, lineno + 1
                if line.strip().startswith(fence):
                    fence = None
            continue
        heading = _HEADING_RE.match(line) if markdown else None
        fence_match = _FENCE_RE.match(line) if markdown else None
        if heading or fence_match or not line.strip() or buf_chars > MAX_BLOCK_CHARS:
            if buf:
                yield Block("\n".join(buf), "paragraph", start, lineno - 1)
                buf, buf_chars, start = [], 0, lineno
        if heading:
            yield Block(heading.group(2), "heading", lineno, lineno, level=len(heading.group(1)))
        elif fence_match:
            buf, buf_chars, start, fence = [line], len(line), lineno, fence_match.group(1)
        elif line.strip():
            if not buf:
                start = lineno
            buf.append(line)
            buf_chars += len(line)
    if buf:
        yield Block("\n".join(buf), "code" if fence else "paragraph", start, lineno)


def split_oversized(text: str, budget: int, counter: TokenCounter) -> list[str]:
    """Split text at sentence ends, then between words, into pieces of ≤ budget tokens."""
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END_RE.split(text.strip()):
        if not sentence:
            continue
        units = [sentence] if counter(sentence) <= budget else sentence.split()
        for unit in units:
            candidate = f"{current} {unit}" if current else unit
            if current and counter(candidate) > budget:
                pieces.append(current)
                candidate = unit
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def section_header(path: list[tuple[int, str]], budget: int, counter: TokenCounter) -> tuple[str, int]:
    """The first line of every chunk under a heading: its heading path (``Guide > Install``), so that
    a chunk names its section to full-text, trigram and vector search alike. Shortened to the
    innermost heading, then left out, when it would take more than a quarter of the budget."""
    for text in (" > ".join(h for _, h in path), path[-1][1] if path else ""):
        n = counter(text) if text else 0
        if text and n <= budget // 4:
            return text, n
    return "", 0


def chunk_blocks(
    blocks: Iterable[Block], *, budget: int = DEFAULT_BUDGET, counter: TokenCounter = count_tokens
) -> Iterator[Chunk]:
    """Pack blocks into chunks of at most ``budget`` tokens, a new chunk at every heading; each chunk
    under a heading starts with its section header line (``section_header``), counted in the budget."""
    path: list[tuple[int, str]] = []
    header, header_tokens = "", 0
    texts: list[str] = []
    tokens = 0
    lines = [0, 0]

    def make(body: str, n: int, line_start: int, line_end: int) -> Chunk:
        text = f"{header}\n\n{body}" if header else body
        return Chunk(text, [h for _, h in path], line_start, line_end, n + header_tokens)

    def flush() -> Chunk | None:
        nonlocal texts, tokens
        if not texts:
            return None
        chunk = make("\n\n".join(texts), tokens, lines[0], lines[1])
        texts, tokens = [], 0
        return chunk

    for block in blocks:
        if block.kind == "heading":
            if (chunk := flush()) is not None:
                yield chunk
            path = [(lvl, h) for lvl, h in path if lvl < block.level] + [(block.level, block.text)]
            header, header_tokens = section_header(path, budget, counter)
            continue
        room = budget - header_tokens
        n = counter(block.text)
        if n > room:
            if (chunk := flush()) is not None:
                yield chunk
            for piece in split_oversized(block.text, room, counter):
                yield make(piece, counter(piece), block.line_start, block.line_end)
            continue
        if tokens + n > room and (chunk := flush()) is not None:
            yield chunk
        if not texts:
            lines[0] = block.line_start
        texts.append(block.text)
        lines[1] = block.line_end
        tokens += n
    if (chunk := flush()) is not None:
        yield chunk


def chunk_text(
    text: str, *, markdown: bool = False, budget: int = DEFAULT_BUDGET,
    counter: TokenCounter = count_tokens,
) -> list[Chunk]:
    return list(chunk_blocks(iter_blocks(text.splitlines(), markdown=markdown),
                             budget=budget, counter=counter))


def chunk_parts(root: Part, chunks: Iterable[Chunk], *, mime: str = "text/plain",
                key_prefix: str = "chunk", start: int = 0, **extra) -> Iterator[Part]:
    """Chunks as TEXT parts under ``root``, linked NEXT in order."""
    prev = None
    for i, chunk in enumerate(chunks, start=start):
        key = f"{key_prefix}:{i}"
        meta = {"heading_path": chunk.heading_path, "line_start": chunk.line_start,
                "line_end": chunk.line_end, "tokens": chunk.tokens, **extra}
        yield root.child(key, modality=TEXT, mime=mime, content=chunk.text.encode("utf-8"),
                         metadata=meta, position=i, prev=prev)
        prev = key


class TextExtractor(Extractor):
    """Plain text and Markdown."""

    name = "text"
    modalities = (TEXT,)

    def __init__(self, budget: int = DEFAULT_BUDGET, counter: TokenCounter = count_tokens):
        self.budget, self.counter = budget, counter

    def run(self, source: Source) -> Iterator[Part]:
        markdown = source.mime == "text/markdown" or source.extension in (".md", ".markdown")
        root = root_part(source, markdown=markdown)
        yield root
        blocks = iter_blocks(iter_lines_utf8(source), markdown=markdown)
        chunks = chunk_blocks(blocks, budget=self.budget, counter=self.counter)
        yield from chunk_parts(root, chunks, mime="text/markdown" if markdown else "text/plain")
