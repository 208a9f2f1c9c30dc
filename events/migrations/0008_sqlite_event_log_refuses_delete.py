"""SQLite: the event log refuses DELETE too, unless the connection's settings allow erasing it.

PostgreSQL refuses DELETE with a row trigger (0002) and TRUNCATE with a statement trigger
unless the session says it means it (0006). SQLite has no session settings and empties a
test database with DELETE, so the trigger asks a function each connection registers
(events/apps.py): it answers settings.EVENT_LOG_ERASABLE, on only in test settings. A
connection that does not know the function (the sqlite3 shell) is refused as well.
"""

from django.db import migrations

SQLITE = """
CREATE TRIGGER event_log_refuses_delete BEFORE DELETE ON event_log
WHEN NOT petstore_event_log_erasable()
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: DELETE refused'); END;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(SQLITE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS event_log_refuses_delete")


class Migration(migrations.Migration):
    dependencies = [("events", "0007_outbox_handler_rows")]
    operations = [migrations.RunPython(forwards, backwards)]
