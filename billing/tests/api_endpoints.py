from tests.api_matrix import Endpoint


def _make_usage(owner):
    import uuid

    from billing.services import record_usage

    event = record_usage(tenant=owner.tenant, meter="search.query", quantity=1, idempotency_key=uuid.uuid4().hex)
    return {"id": event.pk}


ENDPOINTS = [
    Endpoint("billing-balance", "get", "/api/billing/balance", "read"),
    Endpoint("billing-usage", "get", "/api/billing/usage", "read", make=_make_usage,
             list_ids=lambda body: [row["id"] for row in body["results"]]),
]
