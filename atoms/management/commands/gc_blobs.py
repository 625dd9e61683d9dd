from django.core.management.base import BaseCommand

from ...services import blobs_collect_garbage


class Command(BaseCommand):
    help = "Delete blobs that no atom of any tenant refers to (older than --min-age seconds)."

    def add_arguments(self, parser):
        parser.add_argument("--min-age", type=float, default=3600.0)

    def handle(self, *args, min_age, **options):
        deleted = blobs_collect_garbage(min_age_seconds=min_age)
        self.stdout.write(f"deleted {len(deleted)} orphan blob(s)")
