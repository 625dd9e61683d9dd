"""Source code: one chunk per top-level definition, with its line range.

Python is parsed with ``ast`` (decorators belong to their definition; a class larger than the
token budget is cut into its header and one chunk per method). Other languages use a regex on
unindented lines that open a function, class, struct, impl, interface or type. Code between
definitions (imports, constants) becomes ``module`` chunks. A file that does not parse falls
back to the regex splitter.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass

from atoms.extract.base import CODE, ExtractionError, Extractor, Part, Source, root_part
from atoms.extract.text import DEFAULT_BUDGET, count_tokens, iter_lines_utf8

MAX_CODE_BYTES = 8 * 1024 * 1024  # larger "code" is generated; chunk it as text instead

_DEF_RE = re.compile(
    r"^(?:export\s+)?(?:default\s+)?(?:pub(?:\([^)]*\))?\s+)?(?:public\s+|private\s+|protected\s+)?"
    r"(?:static\s+)?(?:async\s+)?(?:unsafe\s+)?"
    r"(?P<kind>function\*?|def|class|fn|func|struct|enum|trait|impl|interface|type|module|sub)\s+"
    r"(?P<name>[A-Za-z_$][\w$]*)?"
)


@dataclass
class CodeSpan:
    kind: str  # "function" | "class" | "method" | "module" | ...
    name: str
    line_start: int  # 1-based, inclusive
    line_end: int


def python_spans(source_text: str, budget: int = DEFAULT_BUDGET) -> list[CodeSpan]:
    tree = ast.parse(source_text)
    lines = source_text.splitlines()
    spans: list[CodeSpan] = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        text = "\n".join(lines[start - 1 : node.end_lineno])
        if kind == "class" and count_tokens(text) > budget:
            spans.extend(_class_pieces(node, start))
        else:
            spans.append(CodeSpan(kind, node.name, start, node.end_lineno))
    return _fill_gaps(spans, len(lines))


def _class_pieces(node: ast.ClassDef, start: int) -> list[CodeSpan]:
    methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    pieces = []
    cursor = start
    for m in methods:
        m_start = min([m.lineno] + [d.lineno for d in m.decorator_list])
        if m_start > cursor:
            pieces.append(CodeSpan("class", node.name, cursor, m_start - 1))
        pieces.append(CodeSpan("method", f"{node.name}.{m.name}", m_start, m.end_lineno))
        cursor = m.end_lineno + 1
    if cursor <= node.end_lineno:
        pieces.append(CodeSpan("class", node.name, cursor, node.end_lineno))
    return pieces


def regex_spans(lines: list[str]) -> list[CodeSpan]:
    """Split at unindented definition lines; each definition runs to the next one."""
    starts = []
    for i, line in enumerate(lines, start=1):
        m = _DEF_RE.match(line)
        if m:
            kind = m.group("kind").rstrip("*")
            kind = "function" if kind in ("def", "fn", "func", "function", "sub") else kind
            starts.append((i, kind, m.group("name") or ""))
    spans = []
    for (i, kind, name), nxt in zip(starts, starts[1:] + [(len(lines) + 1, "", "")], strict=True):
        end = nxt[0] - 1
        while end > i and not lines[end - 1].strip():
            end -= 1
        spans.append(CodeSpan(kind, name, i, end))
    return _fill_gaps(spans, len(lines))


def _fill_gaps(spans: list[CodeSpan], n_lines: int) -> list[CodeSpan]:
    """Add ``module`` spans for the non-blank lines between definitions."""
    out = []
    cursor = 1
    for span in spans:
        if span.line_start > cursor:
            out.append(CodeSpan("module", "", cursor, span.line_start - 1))
        out.append(span)
        cursor = span.line_end + 1
    if cursor <= n_lines:
        out.append(CodeSpan("module", "", cursor, n_lines))
    return out


class CodeExtractor(Extractor):
    name = "code"
    modalities = (CODE,)

    def __init__(self, budget: int = DEFAULT_BUDGET):
        self.budget = budget

    def run(self, source: Source) -> Iterator[Part]:
        if source.size is not None and source.size > MAX_CODE_BYTES:
            raise ExtractionError("code.too_large", f"{source.name} is over {MAX_CODE_BYTES} bytes")
        lines = list(iter_lines_utf8(source))
        language = (source.mime or "").removeprefix("text/x-").removeprefix("text/")
        spans, parser = self._spans(lines, language)
        root = root_part(source, language=language, lines=len(lines), parser=parser)
        yield root
        prev = None
        position = 0
        for span in spans:
            text = "\n".join(lines[span.line_start - 1 : span.line_end]).strip("\n")
            if not text.strip():
                continue
            key = f"code:{position}"
            yield root.child(
                key, content=text.encode("utf-8"), position=position, prev=prev,
                metadata={"kind": span.kind, "name": span.name, "line_start": span.line_start,
                          "line_end": span.line_end, "language": language,
                          "tokens": count_tokens(text)},
            )
            prev, position = key, position + 1

    def _spans(self, lines: list[str], language: str) -> tuple[list[CodeSpan], str]:
        if language == "python":
            try:
                return python_spans("\n".join(lines), self.budget), "ast"
            except (SyntaxError, ValueError):
                pass
        return regex_spans(lines), "regex"
