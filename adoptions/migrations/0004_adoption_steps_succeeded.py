from django.db import migrations, models

# Adoptions begun before the counter: count their steps that have succeeded already (every
# delivery of a PetAdopted event is one of its adoption's steps).
COUNT_SUCCEEDED_STEPS = """
UPDATE adoptions_adoption SET steps_succeeded = (
    SELECT count(*) FROM event_delivery
    WHERE event_delivery.event_id = adoptions_adoption.adopted_event_id
      AND event_delivery.status = 'succeeded'
)
WHERE adopted_event_id IS NOT NULL
"""


class Migration(migrations.Migration):
    dependencies = [
        ("adoptions", "0003_shelter_hours_make_sense"),
        ("events", "0003_delivery_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="adoption",
            name="steps_succeeded",
            field=models.PositiveSmallIntegerField(default=0, editable=False),
        ),
        migrations.RunSQL(COUNT_SUCCEEDED_STEPS, reverse_sql=migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name="adoption",
            index=models.Index(
                condition=models.Q(("status", "processing")), fields=["created_at"], name="adoption_in_progress"
            ),
        ),
    ]
