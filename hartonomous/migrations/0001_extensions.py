"""PostgreSQL extensions, created once in the public schema (a shared app), never per tenant."""
from django.db import migrations

EXTENSIONS = ("vector", "pg_trgm", "btree_gist")


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.RunSQL(
            sql=[f"CREATE EXTENSION IF NOT EXISTS {name} WITH SCHEMA public" for name in EXTENSIONS],
            reverse_sql=migrations.RunSQL.noop,
        )
    ]
