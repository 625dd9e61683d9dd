"""Serve a GenerationStream as a streaming HTTP response (Server-Sent Events or OpenAI-style chunks).

Under ASGI (uvicorn) Django buffers a StreamingHttpResponse whose iterator is synchronous, so there the
response gets an *async* iterator: the synchronous stream runs in a worker thread of its own (inside the
tenant's schema, closing that thread's database connection at the end) and hands events over an asyncio
queue. When the client goes away Django cancels the response iterator; the iterator then tells the thread
to stop, and the thread closes the stream after the token it is decoding, so the run ends as
cancelled / "disconnected" with the steps so far. Under WSGI (and Django's test client) the stream is
served by a plain generator in the request thread.

Each `Renderer` turns events into bytes: `event(e)`, `error(body)` for a failure after the response has
started (the status line is gone by then, so the error travels in the stream), and `end()`.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import StreamingHttpResponse
from django_tenants.utils import schema_context

from hartonomous.errors import ApplicationError, error_body

__all__ = ["Renderer", "sse", "stream_cancel", "streaming_response"]

log = logging.getLogger(__name__)


class Renderer(Protocol):
    def event(self, event: dict) -> bytes: ...
    def error(self, body: dict) -> bytes: ...
    def end(self) -> bytes: ...


def sse(data: str, event: str | None = None) -> bytes:
    """One Server-Sent Event; `data` must hold no newline (JSON from json.dumps holds none)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def failure_body(exc: BaseException) -> dict:
    if isinstance(exc, ApplicationError):
        return error_body(exc.code, exc.message, exc.details)
    return error_body("generation_failed", "The generation failed; the run is closed as failed.")


def stream_cancel(stream) -> None:
    """Close a stream cut short (GenerationStream.close closes its run, read or not)."""
    stream.close()


# --------------------------------------------------------------------------------------------------
# ASGI: a worker thread and an asyncio queue
# --------------------------------------------------------------------------------------------------
class _Pump:
    """Runs the stream in a thread; `started` tells whether the thread ever ran."""

    def __init__(self, stream, schema: str):
        self.stream, self.schema = stream, schema
        self.stop = threading.Event()
        self.started = False

    def run(self, put) -> None:
        try:
            with schema_context(self.schema):
                self._drain(put)
        except Exception as exc:  # noqa: BLE001 - reported in the stream; the run is closed as failed
            if not isinstance(exc, ApplicationError):
                log.exception("generation stream failed")
            put(("error", exc))
        finally:
            connection.close()
            put(("end", None))

    def _drain(self, put) -> None:
        cut = False
        try:
            for event in self.stream:
                put(("event", event))
                if self.stop.is_set() and event["type"] == "token":
                    cut = True
                    break
        finally:
            if cut or self.stop.is_set():
                stream_cancel(self.stream)


async def _events_async(pump: _Pump, renderer: Renderer) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
            pump.stop.set()

    context = contextvars.copy_context()  # the correlation id travels with the thread
    thread = threading.Thread(target=context.run, args=(pump.run, put), name="generation-stream", daemon=True)
    pump.started = True
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                break
            yield renderer.event(value) if kind == "event" else renderer.error(failure_body(value))
        yield renderer.end()
    finally:
        pump.stop.set()  # a no-op when the stream ended; after a disconnect, the thread closes the stream


# --------------------------------------------------------------------------------------------------
# WSGI: the request thread
# --------------------------------------------------------------------------------------------------
def _events_sync(stream, schema: str, renderer: Renderer) -> Iterator[bytes]:
    events, finished = iter(stream), False
    try:
        while not finished:
            with schema_context(schema):
                try:
                    chunk = renderer.event(next(events))
                except StopIteration:
                    finished, chunk = True, renderer.end()
                except Exception as exc:  # noqa: BLE001 - reported in the stream; the run is closed as failed
                    if not isinstance(exc, ApplicationError):
                        log.exception("generation stream failed")
                    finished, chunk = True, renderer.error(failure_body(exc)) + renderer.end()
            yield chunk
    finally:
        if not finished:
            with schema_context(schema):
                stream_cancel(stream)


def streaming_response(request, stream, *, tenant, renderer: Renderer,
                       content_type: str = "text/event-stream") -> StreamingHttpResponse:
    raw = getattr(request, "_request", request)  # a DRF Request wraps the Django one
    if isinstance(raw, ASGIRequest):
        pump = _Pump(stream, tenant.schema_name)
        response = StreamingHttpResponse(_events_async(pump, renderer), content_type=content_type)
        response._resource_closers.append(lambda: _close_unstarted(pump))
    else:
        response = StreamingHttpResponse(_events_sync(stream, tenant.schema_name, renderer), content_type=content_type)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _close_unstarted(pump: _Pump) -> None:
    """The response was closed without its body ever being iterated (the client left first)."""
    if not pump.started:
        pump.started = True
        try:
            with schema_context(pump.schema):
                stream_cancel(pump.stream)
        except Exception:  # noqa: BLE001 - closing on the way out must not fail the response
            log.exception("could not close an unstarted generation stream")
