from django.core.management.base import BaseCommand, CommandError

from hartonomous.errors import ApplicationError
from hartonomous.onboarding import tenant_onboard


class Command(BaseCommand):
    help = "Create a tenant (schema, policy, credits, optional domain)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name")
        parser.add_argument("--domain")
        parser.add_argument("--credits", type=float, default=None)

    def handle(self, *args, slug, name, domain, credits, **options):
        from django.conf import settings

        try:
            tenant = tenant_onboard(slug=slug, name=name or slug, domain=domain,
                                   credits=settings.DEFAULT_CREDITS if credits is None else credits)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"created tenant {tenant.schema_name}")
