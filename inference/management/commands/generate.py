"""manage.py generate --tenant T --model ID|NAME (--prompt TEXT | --chat): tokens printed as they are decoded.

--chat reads user turns from stdin, one per line (an empty line or EOF ends), and keeps the
conversation; --json prints the stream's events as JSON lines instead of text. Every run is recorded
(AtomicStream) like the API's; Ctrl-C closes the run as cancelled with its steps so far.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace

from django.core.management.base import BaseCommand, CommandError

from atoms.management.commands._tenant import activate_tenant
from hartonomous import correlation
from hartonomous.errors import ApplicationError

from ...consumers import model_get
from ...generation import GenerationSpec, generation_start

TOP_SOURCES = 3


class Command(BaseCommand):
    help = "Generate with attention over the tenant's atoms, printing tokens as they come and the sources used."
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--model", required=True, help="Model id or name")
        text = parser.add_mutually_exclusive_group(required=True)
        text.add_argument("--prompt", help="Complete this text")
        text.add_argument("--chat", action="store_true", help="Chat: user turns from stdin, one per line")
        parser.add_argument("--system", help="System message of the chat")
        parser.add_argument("--k", type=int, default=4, help="Atoms to retrieve into the context")
        parser.add_argument("--max-tokens", type=int, default=128)
        parser.add_argument("--temperature", type=float, default=0.0)
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--seed", type=int)
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the events as JSON lines")

    def handle(self, *args, tenant, model, prompt, chat, system, k, max_tokens, temperature, top_p, seed, as_json,
               **options):
        if prompt is not None and not prompt.strip():
            raise CommandError("The prompt is empty.")
        tenant_obj = activate_tenant(tenant)
        self.as_json = as_json
        try:
            model_obj = model_get(model)
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} {exc.details or ''}".strip()) from None
        sampling = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
        spec = GenerationSpec(model=model_obj, k=k, sampling=sampling)
        if not chat:
            self._generate(tenant_obj, replace(spec, prompt=prompt))
            return
        messages = [{"role": "system", "content": system}] if system else []
        for line in options.get("stdin") or sys.stdin:
            if not line.strip():
                break
            messages.append({"role": "user", "content": line.rstrip("\n")})
            done = self._generate(tenant_obj, replace(spec, messages=list(messages)))
            messages.append({"role": "assistant", "content": done["text"]})

    def _generate(self, tenant, spec: GenerationSpec) -> dict:
        token = correlation.set_id(correlation.new_id())
        try:
            stream = generation_start(tenant=tenant, spec=spec, principal="cli:manage.py generate")
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} {exc.details or ''}".strip()) from None
        finally:
            correlation.reset(token)
        done = {}
        try:
            for event in stream:
                self._show(event)
                if event["type"] == "done":
                    done = event
        finally:
            stream.close()  # an interrupt: the run is closed as cancelled with its steps
        if not self.as_json:
            self._summary(done)
        return done

    def _show(self, event: dict) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(event))
        elif event["type"] == "token":
            self.stdout.write(event["text"], ending="")
        else:
            return
        self.stdout.flush()

    def _summary(self, done: dict) -> None:
        from atoms.models import Atom

        rate = f"{done['tokens_per_s']} tokens/s" if done["tokens_per_s"] else "- tokens/s"
        self.stdout.write("")
        self.stdout.write(f"-- run {done['run']}: finish {done['finish_reason']}, "
                          f"{done['usage']['completion_tokens']} tokens, {rate}, first token {done['ttft_ms']:.0f} ms")
        top = sorted(done["sources"], key=lambda s: -s["mass_total"])[:TOP_SOURCES]
        texts = dict(Atom.objects.filter(pk__in=[s["atom"] for s in top]).values_list("id", "text"))
        for s in top:
            snippet = " ".join((texts.get(s["atom"]) or "").split())[:60]
            self.stdout.write(f"   atom {s['atom']}: mass {s['mass_total']:.3f}, top source of {s['top_steps']} "
                              f"token(s)  {snippet!r}")
        if not top:
            self.stdout.write("   no sources in the context")
