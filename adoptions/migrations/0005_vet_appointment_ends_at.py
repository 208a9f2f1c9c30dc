"""Vet visits record when they end, and on PostgreSQL no two visits of a shelter overlap.

Uniqueness of the start alone let a visit booked after the slot length changed (30 to 45
minutes, say) start half-way through an earlier one. Visits booked before get an end from
today's slot length, shortened where that would overlap the shelter's next visit.
"""

from datetime import timedelta

from django.db import migrations, models

EXCLUDE_OVERLAPS = """
CREATE EXTENSION IF NOT EXISTS btree_gist;
ALTER TABLE adoptions_vetappointment ADD CONSTRAINT vet_visits_never_overlap
    EXCLUDE USING gist (shelter_id WITH =, tstzrange(starts_at, ends_at) WITH &&);
"""
ALLOW_OVERLAPS = "ALTER TABLE adoptions_vetappointment DROP CONSTRAINT IF EXISTS vet_visits_never_overlap;"


#: Each visit booked before lasts its shelter's slot length (today's), cut short where the
#: shelter's next visit starts: the slot length may have changed since, and the visits must
#: not overlap, or the constraint below could not be added.
BACKFILL_POSTGRES = """
UPDATE adoptions_vetappointment visit
SET ends_at = LEAST(visit.starts_at + shelter.vet_slot_minutes * interval '1 minute', later.next_start)
FROM adoptions_shelter shelter,
     (SELECT id, LEAD(starts_at) OVER (PARTITION BY shelter_id ORDER BY starts_at) AS next_start
      FROM adoptions_vetappointment) later
WHERE shelter.id = visit.shelter_id AND later.id = visit.id AND visit.ends_at IS NULL
"""


def ends_from_the_slot_length(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKFILL_POSTGRES)
        return
    VetAppointment = apps.get_model("adoptions", "VetAppointment")
    visits = list(VetAppointment.objects.select_related("shelter").order_by("shelter_id", "starts_at"))
    for visit, following in zip(visits, [*visits[1:], None], strict=False):  # the last: None
        visit.ends_at = visit.starts_at + timedelta(minutes=visit.shelter.vet_slot_minutes)
        if following is not None and following.shelter_id == visit.shelter_id:
            visit.ends_at = min(visit.ends_at, following.starts_at)
    VetAppointment.objects.bulk_update(visits, ["ends_at"], batch_size=1000)


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
