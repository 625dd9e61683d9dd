import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from concepts.models import Concept, DiscoveryRun
from concepts.tasks import discover_all_task, discover_concepts_task

from .helpers import blobs, make_atoms

pytestmark = pytest.mark.django_db


def test_it_schedules_discovery_every_hour():
    entry = settings.CELERY_BEAT_SCHEDULE["concepts-discover-hourly"]
    assert entry == {"task": "concepts.discover_all", "schedule": timedelta(hours=1)}


def test_it_runs_discovery_and_binding_as_a_task_in_the_tenant_schema(alpha, beta):
    connection.set_tenant(alpha.tenant)
    make_atoms(blobs(10, 3)[0])
    connection.set_schema_to_public()
    out = discover_concepts_task.run(alpha.slug, "schedule")
    assert out["state"] == "done" and out["k"] == 3 and out["born"] == 3
    connection.set_tenant(alpha.tenant)
    assert DiscoveryRun.objects.get(pk=out["run"]).trigger == "schedule"
    connection.set_tenant(beta.tenant)
    assert Concept.objects.count() == 0


def test_it_queues_one_run_per_tenant(alpha, beta):
    app = discover_concepts_task.app
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        schemas = discover_all_task.run()
    finally:
        app.conf.task_always_eager = eager
    assert {"alpha", "beta"} <= set(schemas) and "public" not in schemas
    for slug in ("alpha", "beta"):
        connection.set_tenant(alpha.tenant if slug == "alpha" else beta.tenant)
        assert DiscoveryRun.objects.filter(trigger="schedule", state="done").count() == 1


def test_it_discovers_on_demand_from_the_command_line(alpha):
    connection.set_tenant(alpha.tenant)
    make_atoms(blobs(10, 2)[0])
    out = io.StringIO()
    call_command("discover_concepts", "--tenant", "alpha", stdout=out)
    text = out.getvalue()
    assert "done: 2 live concepts, born 2" in text and "binding:" in text
    with pytest.raises(CommandError):
        call_command("discover_concepts", "--tenant", "nobody", stdout=io.StringIO())
