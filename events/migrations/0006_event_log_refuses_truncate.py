"""The event log refuses TRUNCATE too: row triggers (0002) never see it.

A session that really means to empty the log (a test database between tests, a benchmark's
scratch database) says so first: SET petstore.erase_event_log = on.
"""

from django.db import migrations

POSTGRES = """
CREATE OR REPLACE FUNCTION event_log_refuse_truncate() RETURNS trigger AS $$
BEGIN
    IF current_setting('petstore.erase_event_log', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the event log is append-only: TRUNCATE refused'
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'A test or scratch database may SET petstore.erase_event_log = on first.';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER event_log_no_truncate BEFORE TRUNCATE ON event_log
    FOR EACH STATEMENT EXECUTE FUNCTION event_log_refuse_truncate();
"""
POSTGRES_REVERSE = """
DROP TRIGGER IF EXISTS event_log_no_truncate ON event_log;
DROP FUNCTION IF EXISTS event_log_refuse_truncate();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_REVERSE)


class Migration(migrations.Migration):
    dependencies = [("events", "0005_vacuum_the_busy_tables_sooner")]
    operations = [migrations.RunPython(forwards, backwards)]
