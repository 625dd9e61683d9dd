from __future__ import annotations

import functools
import re

import numpy as np
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response

from billing.services import record_usage, require_credits
from hartonomous import correlation
from hartonomous.api.pagination import CreatedCursorPagination
from hartonomous.api.views import TenantAPIView
from hartonomous.errors import ApplicationError, NotFound, TooLarge, ValidationFailed

from ..extract import Source
from ..search import SearchQuery, atom_search
from ..selectors import AtomFilters, atom_by_ref, atoms_list
from ..services import atom_delete, atom_ingest
from ..storage import blobstore
from . import serializers as s

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _ingest_response(result) -> Response:
    body = s.IngestOutput({"atom": result.root, "created": result.created, "restored": result.restored,
                           "atoms_new": result.atoms_new, "atoms_existing": result.atoms_existing}).data
    return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class AtomListView(TenantAPIView):
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        parameters=[OpenApiParameter(n, str) for n in ("modality", "source_kind", "created_after", "created_before",
                                                        "source_uri_prefix", "metadata", "cursor")],
        responses=s.AtomOutput(many=True), summary="List atoms (newest first, cursor-paginated)",
    )
    def get(self, request):
        query = self.validated(s.ListQuery, request.query_params)
        filters = AtomFilters(modality=query.get("modality", []), metadata=query.get("metadata"),
                              created_after=query.get("created_after"), created_before=query.get("created_before"),
                              source_kind=query.get("source_kind"), source_uri_prefix=query.get("source_uri_prefix"))
        return self.paginate(atoms_list(filters=filters), s.AtomOutput, CreatedCursorPagination)

    @extend_schema(request={"application/json": s.TextIngestInput, "multipart/form-data": s.UploadIngestInput},
                   responses={201: s.IngestOutput, 200: s.IngestOutput},
                   summary="Ingest text (JSON) or a file (multipart); 201 new, 200 already present")
    def post(self, request):
        from django.conf import settings

        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > settings.MAX_UPLOAD_BYTES + 64 * 1024:
            raise TooLarge(f"The upload is larger than {settings.MAX_UPLOAD_BYTES} bytes.")
        require_credits(tenant=self.tenant)
        if request.content_type.startswith("multipart/"):
            data = self.validated(s.UploadIngestInput, request.data)
            upload = data["file"]
            source = Source(name=upload.name or "upload.bin", stream=upload, size=upload.size,
                            mime=upload.content_type if upload.content_type != "application/octet-stream" else None)
        else:
            data = self.validated(s.TextIngestInput, request.data)
            source = Source.from_bytes(data["text"].encode("utf-8"), data["name"], mime=data.get("mime"))
        result = atom_ingest(tenant=self.tenant, source=source, source_kind="upload",
                             source_uri=data.get("source_uri", ""), metadata=data.get("metadata") or {})
        return _ingest_response(result)


class AtomDetailView(TenantAPIView):
    def _atom(self, ref: str):
        atom = atom_by_ref(ref=ref)
        if atom is None:
            raise NotFound("No such atom.", details={"atom": ref})
        return atom

    @extend_schema(responses=s.AtomDetailOutput, summary="One atom by id or SHA-256")
    def get(self, request, ref: str):
        return Response(s.AtomDetailOutput(self._atom(ref)).data)

    @extend_schema(responses=s.AtomOutput, summary="Soft-delete an atom (kept in history)")
    def delete(self, request, ref: str):
        return Response(s.AtomOutput(atom_delete(atom=self._atom(ref))).data)


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range, or None for the whole content."""
    if not header:
        return None
    match = RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        raise _RangeNotSatisfiable(size)
    first, last = match.groups()
    if not first:  # suffix: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise _RangeNotSatisfiable(size)
    return start, end


class _RangeNotSatisfiable(ApplicationError):
    status, code = 416, "range_not_satisfiable"

    def __init__(self, size: int):
        super().__init__("The requested range is not satisfiable.", details={"size": size})


def _stream_blob(sha: str, start: int, length: int, chunk: int = 1 << 20):
    with blobstore().open(sha) as f:
        f.seek(start)
        left = length
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                break
            left -= len(data)
            yield data


class AtomContentView(TenantAPIView):
    @extend_schema(responses={(200, "application/octet-stream"): bytes, (206, "application/octet-stream"): bytes},
                   summary="The atom's bytes; supports single HTTP ranges")
    def get(self, request, ref: str):
        atom = atom_by_ref(ref=ref)
        if atom is None:
            raise NotFound("No such atom.", details={"atom": ref})
        span = _byte_range(request.META.get("HTTP_RANGE", ""), atom.size)
        start, end = span or (0, atom.size - 1)
        length = end - start + 1
        if atom.content is not None:
            response = HttpResponse(bytes(atom.content)[start:end + 1], content_type=atom.mime)
        else:
            response = StreamingHttpResponse(_stream_blob(atom.sha256, start, length), content_type=atom.mime)
        response["Content-Length"] = str(length)
        response["Accept-Ranges"] = "bytes"
        response["ETag"] = f'"{atom.sha256}"'
        response["X-Correlation-ID"] = correlation.get()
        if span:
            response.status_code = 206
            response["Content-Range"] = f"bytes {start}-{end}/{atom.size}"
        return response


class SemanticSearchView(TenantAPIView):
    required_scope = "read"  # a POST that only reads
    @extend_schema(request=s.SearchInput, responses=s.SearchHitOutput(many=True),
                   summary="Hybrid search: vector (HNSW) + full text + trigram, fused and reranked")
    def post(self, request):
        data = self.validated(s.SearchInput, request.data)
        require_credits(tenant=self.tenant)
        query = _search_query(data)
        hits = atom_search(query)
        # every search that ran is billed: the key is made here, never from the caller's correlation id
        # (a client resending one X-Correlation-ID would otherwise search for free after the first time)
        record_usage(tenant=self.tenant, meter="search.query", quantity=1,
                     idempotency_key=f"search:{correlation.new_id()}")
        output = _hit_output()
        results = [output.to_representation({"atom": h.atom, "score": h.score, "why": h.why,
                                             "snippet": (h.atom.text or "")[:300] or None}) for h in hits]
        return Response({"results": results, "count": len(results)})


@functools.cache
def _hit_output() -> s.SearchHitOutput:
    """One output serializer for all requests (it holds no per-request state): building its fields
    (a ModelSerializer introspects the model) cost more than rendering the hits."""
    return s.SearchHitOutput()


def _search_query(data: dict) -> SearchQuery:
    atom = None
    if data.get("atom"):
        atom = atom_by_ref(ref=data["atom"])
        if atom is None:
            raise NotFound("No such atom.", details={"atom": data["atom"]})
    filters = AtomFilters(**data.get("filters", {}))
    vector = np.asarray(data["vector"], dtype=np.float32) if data.get("vector") else None
    query = SearchQuery(text=data.get("text"), vector=vector, atom=atom, model=data.get("model"), k=data["k"],
                        filters=filters, ef_search=data.get("ef_search"))
    if data.get("weights"):
        query.weights.update(data["weights"])
    if vector is not None and not np.isfinite(vector).all():
        raise ValidationFailed("vector must be finite.")
    return query
