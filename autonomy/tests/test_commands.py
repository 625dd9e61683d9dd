import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from autonomy.models import ImprovementRun

pytestmark = pytest.mark.django_db


def test_it_triggers_a_run_from_the_command_line_in_that_tenant_only(alpha, beta):
    out = io.StringIO()
    call_command("autonomy", "run", "--tenant", alpha.slug, "--dry-run", stdout=out)
    run_id = int(out.getvalue().split()[1])
    connection.set_tenant(alpha.tenant)
    run = ImprovementRun.objects.get(pk=run_id)
    assert run.trigger == "command" and run.dry_run and run.state == "running"
    connection.set_tenant(beta.tenant)
    assert not ImprovementRun.objects.filter(trigger="command", created_at=run.created_at).exists()


def test_it_refuses_an_unknown_tenant():
    with pytest.raises(CommandError):
        call_command("autonomy", "run", "--tenant", "nosuch")
