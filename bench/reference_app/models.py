"""The one table the reference endpoint writes to."""

import uuid

from django.db import models


class ReferenceRow(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pet_id = models.UUIDField()
    user_id = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "bench_reference_row"

    def __str__(self) -> str:
        return f"reference row {self.id}"
