"""WebSocket `/ws/generate/`: tokens streamed with their attributions, as they are decoded.

The client connects with a key holding the `generate` scope (`?key=` or an Authorization header, as
/ws/progress/), then sends one JSON object per generation:

    {"model": 3, "prompt": "..." | "messages": [{role, content}, ...], "k": 4, "max_tokens": 64,
     "temperature": 0.7, "top_p": 0.95, "seed": 1, ...}

and receives the GenerationStream's events in order: `{"type": "run"}`, `{"type": "token"}` per token,
`{"type": "done"}`. Bad input answers `{"type": "error", "error": {code, message, details,
correlation_id}}` and records nothing; the socket stays open for the next request. One generation
at a time per socket; `{"type": "cancel"}` or closing the socket stops it, and the run is closed as
cancelled / "disconnected" with the steps decoded so far.

Decoding is synchronous CPU work: it runs in a worker thread (its own database connection, the
tenant's schema set) and hands each event to the event loop, waiting until it is sent, so a slow
client slows the decode instead of filling memory.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from hartonomous import correlation
from hartonomous.consumers import _meta_from_scope, _principal_for
from hartonomous.errors import ApplicationError, Conflict, NotFound, ValidationFailed, error_body

from .generation import GenerationSpec

log = logging.getLogger(__name__)

SAMPLING_FIELDS = ("max_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "repeat_last_n", "seed",
                   "stop")
SPEC_FIELDS = ("prompt", "messages", "k", "context_budget", "knn_lambda", "alternatives", "attribution_layers",
               "source_ids", "metadata_filter")
ACCEPTED = {"type", "model", *SAMPLING_FIELDS, *SPEC_FIELDS}
SEND_TIMEOUT_S = 60


def model_get(ref) -> object:
    """The generating model by id (int) or by name (the newest of that name); NotFound otherwise."""
    from .selectors import model_by_ref

    if isinstance(ref, bool) or not isinstance(ref, (int, str)) or not str(ref).strip():
        raise ValidationFailed("model must be a model id or name.", details={"field": "model"})
    model = model_by_ref(ref)
    if model is None:
        raise NotFound("No such model.", details={"model": ref})
    return model


def spec_from_message(message) -> GenerationSpec:
    """A request message to a GenerationSpec; the numbers are checked by generation_start."""
    if not isinstance(message, dict):
        raise ValidationFailed("The message must be a JSON object.")
    unknown = sorted(set(message) - ACCEPTED)
    if unknown:
        raise ValidationFailed("Unknown fields.", details={"fields": unknown, "accepted": sorted(ACCEPTED)})
    if message.get("type", "generate") != "generate":
        raise ValidationFailed("type must be generate or cancel.", details={"field": "type"})
    if "model" not in message:
        raise ValidationFailed("model is required.", details={"field": "model"})
    source_ids = message.get("source_ids")
    if source_ids is not None and not (isinstance(source_ids, list) and len(source_ids) <= 32 and all(
            isinstance(i, int) and not isinstance(i, bool) for i in source_ids)):
        raise ValidationFailed("source_ids must be a list of up to 32 atom ids.", details={"field": "source_ids"})
    metadata_filter = message.get("metadata_filter")
    if metadata_filter is not None and not isinstance(metadata_filter, dict):
        raise ValidationFailed("metadata_filter must be an object.", details={"field": "metadata_filter"})
    model = model_get(message["model"])
    spec = {f: message[f] for f in SPEC_FIELDS if f in message}
    return GenerationSpec(model=model, sampling={f: message[f] for f in SAMPLING_FIELDS if f in message}, **spec)


def error_event(exc: ApplicationError) -> dict:
    return {"type": "error", **error_body(exc.code, exc.message, exc.details)}


class GenerateConsumer(AsyncJsonWebsocketConsumer):
    channel_layer_alias = "none"  # no groups: a socket talks only to its own generation, no Redis round trips
    task: asyncio.Task | None = None
    stop: threading.Event | None = None
    busy = False  # from a request until its last event (done / error) is sent

    async def connect(self):
        self.principal = await _principal_for(_meta_from_scope(self.scope))
        if self.principal is None:
            await self.close(code=4401)
            return
        if not self.principal.has_scope("generate"):
            await self.close(code=4403)
            return
        await self.accept()

    async def disconnect(self, code):
        await self._stop()

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        try:
            content = json.loads(text_data if text_data is not None else bytes_data)
        except (TypeError, ValueError, UnicodeDecodeError):
            await self.send_json(error_event(ValidationFailed("The message must be a JSON object.")))
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "cancel":
            run = await self._stop()
            if run is not None:
                await self.send_json({"type": "cancelled", "run": run, "finish_reason": "disconnected"})
            return
        if self.busy:
            await self.send_json(error_event(Conflict("A generation is already running on this socket; "
                                                      "send {\"type\": \"cancel\"} or wait for done.")))
            return
        self.busy, self.stop = True, threading.Event()
        self.task = asyncio.create_task(self._generate(content, self.stop))

    async def _stop(self) -> int | None:
        """Stop the generation in flight; the id of the run it cut short, if it did."""
        if self.stop is not None:
            self.stop.set()
        if self.task is None:
            return None
        task, self.task, self.busy = self.task, None, False
        [result] = await asyncio.gather(task, return_exceptions=True)
        return result if isinstance(result, int) else None

    async def _generate(self, content, stop: threading.Event) -> int | None:
        loop = asyncio.get_running_loop()

        async def send(event: dict) -> bool:
            if event["type"] in ("done", "error"):
                self.busy = False
            try:
                await self.send_json(event)
                return True
            except Exception:  # noqa: BLE001 - the socket is gone: stop decoding
                return False

        def emit(event: dict) -> bool:
            if stop.is_set():
                return False
            try:
                return asyncio.run_coroutine_threadsafe(send(event), loop).result(timeout=SEND_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - loop closing or the client stalled
                return False

        run = database_sync_to_async(generate_to, thread_sensitive=False)
        return await run(tenant=self.principal.tenant, principal=str(self.principal), content=content, emit=emit,
                         stop=stop)


def generate_to(*, tenant, principal: str, content, emit, stop: threading.Event) -> int | None:
    """Validate, start and decode in this thread, emitting each event; stop when `stop` is set or
    `emit` fails (the client went away). The run is closed whatever happens (GenerationStream).
    Returns the id of a run that was cut short, None otherwise."""
    from django.db import connection
    from django_tenants.utils import schema_context

    from .generation import generation_start

    token = correlation.set_id(correlation.new_id())
    try:
        with schema_context(tenant.schema_name):
            try:
                stream = generation_start(tenant=tenant, spec=spec_from_message(content), principal=principal)
            except ApplicationError as exc:
                emit(error_event(exc))
                return None
            return None if _drain(stream, emit, stop) else stream.run.pk
    except Exception:  # noqa: BLE001 - never a silent socket: say so, the stream has closed the run as failed
        log.exception("generation over websocket failed")
        emit({"type": "error", **error_body("internal_error", "The generation failed.")})
        return None
    finally:
        correlation.reset(token)
        connection.close()


def _drain(stream, emit, stop: threading.Event) -> bool:
    """True when the stream ran to its done event."""
    try:
        for event in stream:
            sent = emit(event)
            if event["type"] == "done":
                return True
            if not sent or stop.is_set():  # closing the stream closes its run as "disconnected"
                return False
        return False
    finally:
        stream.close()
