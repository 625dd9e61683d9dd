from django.core.management.base import BaseCommand

from hartonomous.retention import prune_history


class Command(BaseCommand):
    help = "Prune history older than its retention (operational 90 days, regulatory 7 years by default)."

    def handle(self, *args, **options):
        deleted = prune_history()
        for table, count in sorted(deleted.items()):
            self.stdout.write(f"{table}: {count}")
        self.stdout.write(f"pruned {sum(deleted.values())} history row(s)")
