"""Vet visits record when they end, and on PostgreSQL no two visits of a shelter overlap.

Uniqueness of the start alone let a visit booked after the slot length changed (30 to 45
minutes, say) start half-way through an earlier one.
"""

from datetime import timedelta

from django.db import migrations, models

EXCLUDE_OVERLAPS = """
CREATE EXTENSION IF NOT EXISTS btree_gist;
ALTER TABLE adoptions_vetappointment ADD CONSTRAINT vet_visits_never_overlap
    EXCLUDE USING gist (shelter_id WITH =, tstzrange(starts_at, ends_at) WITH &&);
"""
ALLOW_OVERLAPS = "ALTER TABLE adoptions_vetappointment DROP CONSTRAINT IF EXISTS vet_visits_never_overlap;"


def ends_from_the_slot_length(apps, schema_editor):
    """A visit booked before this lasted its shelter's slot length at the time: take today's."""
    VetAppointment = apps.get_model("adoptions", "VetAppointment")
    booked = VetAppointment.objects.filter(ends_at__isnull=True).select_related("shelter")
    for visit in booked.iterator(chunk_size=2000):
        visit.ends_at = visit.starts_at + timedelta(minutes=visit.shelter.vet_slot_minutes)
        visit.save(update_fields=["ends_at"])


def exclude_overlaps(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(EXCLUDE_OVERLAPS)


def allow_overlaps(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ALLOW_OVERLAPS)


class Migration(migrations.Migration):
    dependencies = [("adoptions", "0004_adoption_steps_succeeded")]

    operations = [
        migrations.AddField(
            model_name="vetappointment", name="ends_at", field=models.DateTimeField(null=True)
        ),
        migrations.RunPython(ends_from_the_slot_length, migrations.RunPython.noop),
        migrations.AlterField(model_name="vetappointment", name="ends_at", field=models.DateTimeField()),
        migrations.RunPython(exclude_overlaps, allow_overlaps),
    ]
