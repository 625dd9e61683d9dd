"""WebSocket dashboard feed: progress of the caller's tenant only."""
from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .progress import progress_group


@database_sync_to_async
def _principal_for(meta: dict):
    from django.db import close_old_connections

    from tenants.authentication import CredentialError, authenticate_credential

    close_old_connections()
    try:
        return authenticate_credential(meta)
    except CredentialError:
        return None


def _meta_from_scope(scope) -> dict:
    meta = {}
    for name, value in scope.get("headers", []):
        key = "HTTP_" + name.decode("latin1").upper().replace("-", "_")
        meta[key] = value.decode("latin1")
    query = parse_qs(scope.get("query_string", b"").decode())
    if "key" in query and "HTTP_AUTHORIZATION" not in meta:
        meta["HTTP_AUTHORIZATION"] = f"Bearer {query['key'][-1]}"
    return meta


class ProgressConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        principal = await _principal_for(_meta_from_scope(self.scope))
        if principal is None or not principal.has_scope("read"):
            await self.close(code=4401)
            return
        self.group = progress_group(principal.tenant.schema_name)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "tenant": principal.tenant.schema_name})

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def progress_message(self, event):
        await self.send_json({k: v for k, v in event.items() if k != "type"} | {"type": "progress"})
