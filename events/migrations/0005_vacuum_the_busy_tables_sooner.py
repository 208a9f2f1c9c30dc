"""Let autovacuum visit the outbox and the delivery inbox sooner than PostgreSQL's default.

Every outbox row is updated once when it is published and every delivery two or three times,
so these tables fill with dead row versions at the rate of the traffic. The default waits
for 20 % of a table to be dead before vacuuming it, and a table of millions of kept rows then
carries a large dead share through the relay's claim and the handlers' upserts (the
benchmarks vacuum between probes for the same reason: bench/stack.py vacuum_analyze).
1 % keeps them lean.
"""

from django.db import migrations

TABLES = ("event_outbox", "event_delivery")
SOONER = "autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02"
DEFAULTS = "autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {table} SET ({SOONER})", params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {table} RESET ({DEFAULTS})", params=None)


class Migration(migrations.Migration):
    dependencies = [("events", "0004_outbox_wakes_relay")]

    operations = [migrations.RunPython(forwards, backwards)]
