"""The usage and credit ledgers refuse UPDATE and DELETE at the database, not only in Python."""
from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION hartonomous_refuse_change() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$ LANGUAGE plpgsql;
"""
TABLES = ("billing_usageevent", "billing_credittransaction")


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunSQL(FUNCTION, "DROP FUNCTION IF EXISTS hartonomous_refuse_change() CASCADE")] + [
        migrations.RunSQL(
            f"CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION hartonomous_refuse_change()",
            f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}",
        )
        for t in TABLES
    ]
