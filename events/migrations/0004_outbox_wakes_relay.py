"""Wake relays and projectors from the database: a NOTIFY sent by the outbox insert itself.

A NOTIFY inside a transaction is delivered when it commits and dropped if it rolls back,
and PostgreSQL folds repeats within one transaction: one wake-up per command, without the
extra round trip a NOTIFY after COMMIT costs every request.
"""

from django.db import migrations

POSTGRES = """
CREATE OR REPLACE FUNCTION event_outbox_wake() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('petstore_outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER event_outbox_wake
    AFTER INSERT ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_wake();
"""
POSTGRES_REVERSE = """
DROP TRIGGER IF EXISTS event_outbox_wake ON event_outbox;
DROP FUNCTION IF EXISTS event_outbox_wake();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_REVERSE, params=None)


class Migration(migrations.Migration):
    dependencies = [("events", "0003_delivery_and_more")]

    operations = [migrations.RunPython(forwards, backwards)]
