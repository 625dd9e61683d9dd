"""PDF (pypdf) and HTML (stdlib html.parser): text extraction, then the text chunker.

PDF: one ``page:<n>`` part per page (PART_OF the document), its text chunks PART_OF the page.
HTML: headings become Markdown headings so the chunker keeps the section path; script,
style and template contents are dropped, and so is navigation (<nav>, role="navigation", and the
navigation bars of common documentation generators: DocBook navheader/navfooter, Sphinx
related/sphinxsidebar, breadcrumbs), which would otherwise repeat "Prev Up Next" and other
pages' titles in every document; the <title> goes into the root's metadata.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from html.parser import HTMLParser

from atoms.extract.base import DOCUMENT, ExtractionError, Extractor, Part, Source, root_part
from atoms.extract.text import DEFAULT_BUDGET, chunk_parts, chunk_text, count_tokens

MAX_HTML_BYTES = 64 * 1024 * 1024


class PdfExtractor(Extractor):
    name = "pdf"
    modalities = (DOCUMENT,)

    def __init__(self, budget: int = DEFAULT_BUDGET, counter=count_tokens):
        self.budget, self.counter = budget, counter

    def able_to_run(self, source: Source) -> bool:
        return source.detect() == DOCUMENT and source.mime == "application/pdf"

    def run(self, source: Source) -> Iterator[Part]:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        try:
            with source.as_path() as path:
                reader = PdfReader(str(path))  # reads lazily: pages are parsed one by one
                if reader.is_encrypted:
                    raise ExtractionError("pdf.encrypted", f"{source.name} is encrypted")
                n_pages = len(reader.pages)
                info = reader.metadata or {}
                root = root_part(source, pages=n_pages, title=str(info.get("/Title") or "") or None)
                yield root
                prev = None
                for number, page in enumerate(reader.pages, start=1):
                    page_key = f"page:{number}"
                    yield root.child(page_key, modality=DOCUMENT, mime="application/pdf",
                                     position=number - 1, prev=prev, metadata={"page": number})
                    page_part = Part(modality=DOCUMENT, mime="application/pdf", key=page_key)
                    text = page.extract_text() or ""
                    chunks = chunk_text(text, budget=self.budget, counter=self.counter)
                    yield from chunk_parts(page_part, chunks, key_prefix=f"{page_key}:chunk",
                                           page=number)
                    prev = page_key
        except ExtractionError:
            raise
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError,
                OSError, RecursionError) as exc:
            raise ExtractionError("pdf.corrupt", f"{source.name}: {type(exc).__name__}: {exc}") from None


_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "li", "ul", "ol",
    "table", "tr", "blockquote", "pre", "br", "hr", "dt", "dd", "figure", "figcaption", "form",
}
_SKIP_TAGS = {"script", "style", "template", "noscript", "svg", "head", "nav"}
_NAV_CLASSES = {"navheader", "navfooter", "navbar", "breadcrumb", "breadcrumbs", "related", "sphinxsidebar"}


def _is_navigation(tag: str, attrs) -> bool:
    found = dict(attrs)
    return tag in _SKIP_TAGS or found.get("role") == "navigation" or bool(
        set((found.get("class") or "").split()) & _NAV_CLASSES)


class _HtmlText(HTMLParser):
    """Collect visible text as Markdown-ish lines (headings as #, blocks as paragraphs)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip_tag: str | None = None  # the element being skipped, and how deep its own tag nests
        self.skip_depth = 0
        self.heading: int | None = None
        self.in_title = False
        self.title = ""

    def _break(self) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            prefix = "#" * self.heading + " " if self.heading else ""
            self.lines += [prefix + text, ""]
        self.current = []

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        if self.skip_tag is not None:
            self.skip_depth += tag == self.skip_tag
        elif _is_navigation(tag, attrs):
            self._break()
            self.skip_tag, self.skip_depth = tag, 1
        elif tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            self._break()
            self.heading = int(tag[1])
        elif tag in _BLOCK_TAGS:
            self._break()

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
        elif tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            self._break()
            self.heading = None
        elif tag in _BLOCK_TAGS:
            self._break()

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        elif self.skip_tag is None:
            self.current.append(data)

    def close(self):
        super().close()
        self._break()


def html_to_markdown(html: str) -> tuple[str, str]:
    """(visible text with Markdown headings, title)."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return "\n".join(parser.lines), " ".join(parser.title.split())


class HtmlExtractor(Extractor):
    name = "html"
    modalities = (DOCUMENT,)

    def __init__(self, budget: int = DEFAULT_BUDGET, counter=count_tokens):
        self.budget, self.counter = budget, counter

    def able_to_run(self, source: Source) -> bool:
        return source.detect() == DOCUMENT and source.mime == "text/html"

    def run(self, source: Source) -> Iterator[Part]:
        if source.size is not None and source.size > MAX_HTML_BYTES:
            raise ExtractionError("html.too_large", f"{source.name} is over {MAX_HTML_BYTES} bytes")
        parser = _HtmlText()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with source.open() as f:
            while chunk := f.read(1 << 20):
                parser.feed(decoder.decode(chunk))
        parser.feed(decoder.decode(b"", final=True))
        parser.close()
        text = "\n".join(parser.lines)
        root = root_part(source, title=" ".join(parser.title.split()) or None)
        yield root
        chunks = chunk_text(text, markdown=True, budget=self.budget, counter=self.counter)
        yield from chunk_parts(root, chunks, mime="text/plain")
