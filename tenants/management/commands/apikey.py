from django.core.management.base import BaseCommand, CommandError

from hartonomous.errors import ApplicationError
from tenants.selectors import tenant_by_slug
from tenants.services import api_key_create, api_key_revoke


class Command(BaseCommand):
    help = "Create or revoke API keys: apikey create --tenant T --name N --scopes read,write | apikey revoke --tenant T ID"

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("--tenant", required=True)
        create.add_argument("--name", required=True)
        create.add_argument("--scopes", default="read,write,generate")
        revoke = sub.add_parser("revoke")
        revoke.add_argument("--tenant", required=True)
        revoke.add_argument("key_id", type=int)

    def handle(self, *args, action, tenant, **options):
        found = tenant_by_slug(slug=tenant)
        if found is None:
            raise CommandError(f"No active tenant {tenant!r}.")
        try:
            if action == "create":
                scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
                key, raw = api_key_create(tenant=found, name=options["name"], scopes=scopes)
                self.stdout.write(f"id={key.pk} prefix={key.prefix} scopes={','.join(key.scopes)}")
                self.stdout.write(raw)
            else:
                key = api_key_revoke(tenant=found, key_id=options["key_id"])
                self.stdout.write(f"revoked id={key.pk} prefix={key.prefix}")
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
