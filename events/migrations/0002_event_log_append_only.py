"""Make the event log append-only in the database itself, not just in the ORM."""

from django.db import migrations

POSTGRES = """
CREATE OR REPLACE FUNCTION event_log_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER event_log_append_only
    BEFORE UPDATE OR DELETE ON event_log
    FOR EACH ROW EXECUTE FUNCTION event_log_refuse_change();
"""
POSTGRES_REVERSE = """
DROP TRIGGER IF EXISTS event_log_append_only ON event_log;
DROP FUNCTION IF EXISTS event_log_refuse_change();
"""
# SQLite: refuse updates here; 0008 refuses deletes too, but for connections whose settings
# allow emptying the log (test databases are flushed with DELETE; PostgreSQL flushes with
# TRUNCATE, which row triggers do not see).
SQLITE = """
CREATE TRIGGER event_log_append_only BEFORE UPDATE ON event_log
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: UPDATE refused'); END;
"""


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE)


def backwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_REVERSE)
    elif vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS event_log_append_only")


class Migration(migrations.Migration):
    dependencies = [("events", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
