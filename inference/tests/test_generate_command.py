"""manage.py generate on the real SmolLM2 and the real database: streamed tokens, summary, chat, bad input."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from inference.tests.helpers import text_atoms
from inference.tests.test_models import smol  # noqa: F401 (module fixture)
from provenance.models import GenerationRun

pytestmark = pytest.mark.django_db

FACTS = ["The Grommet-9 daemon writes its journal to /var/lib/grommet and rotates it every 12 hours.",
         "Otters hold hands while sleeping so that they do not drift apart."]
QUESTION = "The Grommet-9 daemon writes its journal to"


class Recorder(io.StringIO):
    """stdout that remembers what each flush pushed out (tokens must leave one by one)."""

    def __init__(self):
        super().__init__()
        self.flushed: list[str] = []
        self._mark = 0

    def flush(self):
        self.flushed.append(self.getvalue()[self._mark:])
        self._mark = len(self.getvalue())


@pytest.fixture
def facts(alpha):
    ids = text_atoms(alpha.tenant, FACTS)
    connection.set_schema_to_public()
    return ids


def test_it_prints_tokens_as_they_come_then_the_summary(smol, alpha, facts):  # noqa: F811
    out = Recorder()
    call_command("generate", "--tenant", alpha.slug, "--model", str(smol.pk), "--prompt", QUESTION, "--k", "2",
                 "--max-tokens", "6", stdout=out)
    text = out.getvalue()
    connection.set_tenant(alpha.tenant)
    run = GenerationRun.objects.latest("id")
    assert run.status == "completed" and run.tokens_out == 6 and run.principal == "cli:manage.py generate"
    assert text.startswith(run.text) and "/var/lib/g" in run.text
    assert "".join(out.flushed[:run.tokens_out]) == run.text  # one flush per token
    assert sum(1 for piece in out.flushed[:run.tokens_out] if piece) >= run.tokens_out - 1
    summary = text[len(run.text):]
    assert f"-- run {run.pk}: finish length, 6 tokens" in summary and "tokens/s" in summary
    assert f"atom {facts[0]}: mass" in summary and "Grommet-9 daemon" in summary


def test_it_takes_the_model_by_name_and_prints_json_events(smol, alpha, facts):  # noqa: F811
    out = io.StringIO()
    call_command("generate", "--tenant", alpha.slug, "--model", smol.name, "--prompt", QUESTION, "--k", "1",
                 "--max-tokens", "3", "--seed", "7", "--temperature", "0.7", "--json", stdout=out)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["type"] for e in events] == ["run", "token", "token", "token", "done"]
    assert events[0]["seed"] == 7 and events[0]["sources"][0]["atom"] == facts[0]
    assert all("attributions" in e for e in events[1:-1])


def test_it_chats_over_stdin_keeping_the_conversation(smol, alpha, facts):  # noqa: F811
    out = io.StringIO()
    call_command("generate", "--tenant", alpha.slug, "--model", str(smol.pk), "--chat", "--k", "1",
                 "--max-tokens", "2", "--system", "Be brief.", stdin=io.StringIO("Hello\nWhere is the journal?\n\nx\n"),
                 stdout=out)
    connection.set_tenant(alpha.tenant)
    first, second = GenerationRun.objects.order_by("-id")[:2][::-1]
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert [m["content"] for m in second.messages] == ["Be brief.", "Hello", first.text, "Where is the journal?"]
    assert out.getvalue().count("-- run ") == 2


@pytest.mark.parametrize("argv, message", [
    (["--tenant", "nobody"], "No active tenant"),
    (["--model", "999999999"], "No such model"),
    (["--model", "no-such-model"], "No such model"),
    (["--prompt", "  "], "The prompt is empty"),
    (["--k", "-1"], "k must be an integer"),
    (["--max-tokens", "0"], "max_tokens"),
    (["--temperature", "-2"], "temperature"),
])
def test_it_refuses_bad_input_with_a_clear_error(smol, alpha, argv, message):  # noqa: F811
    connection.set_tenant(alpha.tenant)
    before = GenerationRun.objects.count()
    connection.set_schema_to_public()
    args = {"--tenant": alpha.slug, "--model": str(smol.pk), "--prompt": QUESTION, "--max-tokens": "2"}
    args.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    with pytest.raises(CommandError, match=message):
        call_command("generate", *[x for pair in args.items() for x in pair], stdout=io.StringIO())
    connection.set_tenant(alpha.tenant)
    assert GenerationRun.objects.count() == before


def test_beta_cannot_use_alphas_model(smol, alpha, beta):  # noqa: F811
    with pytest.raises(CommandError, match="No such model"):
        call_command("generate", "--tenant", beta.slug, "--model", smol.name, "--prompt", QUESTION,
                     stdout=io.StringIO())
