"""Query tables kept by projections, and each projection's checkpoint.

Every query table carries a `generation`: a rebuild fills the next generation beside the live
one and a single update of ProjectionState.generation swaps it in, so queries keep answering
while history is replayed (blue/green, one transaction, no table renames).
"""

from django.db import models


class ProjectionState(models.Model):
    """Where a projection stands in the log, which generation is live, and what went wrong."""

    class Status(models.TextChoices):
        RUNNING = "running"
        FAILED = "failed"  # stopped at `error_position` until fixed and resumed

    name = models.CharField(max_length=100, primary_key=True)
    transaction_id = models.BigIntegerField(default=0)
    position = models.BigIntegerField(default=0)
    generation = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True, default="")
    error_position = models.BigIntegerField(null=True, blank=True)
    events_applied = models.BigIntegerField(default=0)
    last_event_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # A rebuild in progress: its generation and how far it got (so it can resume).
    rebuild_generation = models.PositiveIntegerField(null=True, blank=True)
    rebuild_transaction_id = models.BigIntegerField(default=0)
    rebuild_position = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} at #{self.position} ({self.status})"


class ProjectionDeadLetter(models.Model):
    """An event a projection could not apply and was told to skip, kept for replay."""

    projection = models.CharField(max_length=100)
    event_id = models.UUIDField()
    position = models.BigIntegerField()
    event_type = models.CharField(max_length=100)
    error = models.TextField()
    #: The generation it was skipped in: a rebuild lists only what the new generation skipped.
    generation = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["projection", "event_id"], name="one_dead_letter_per_event")
        ]

    def __str__(self) -> str:
        return f"{self.projection} skipped #{self.position} {self.event_type}"


class PetListing(models.Model):
    """available_pets: every pet with what a visitor filters on; available ones are listed."""

    projection_key = "pet_id"

    generation = models.PositiveIntegerField()
    pet_id = models.UUIDField()
    name = models.CharField(max_length=100)
    species = models.CharField(max_length=20)
    age = models.PositiveSmallIntegerField()
    shelter_id = models.UUIDField()
    shelter_name = models.CharField(max_length=200)
    photo_url = models.CharField(max_length=500, blank=True, default="")
    available = models.BooleanField(default=True)
    #: When the pet last became available; days available are counted from it at query time.
    available_since = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["generation", "pet_id"], name="one_listing_per_pet")]
        indexes = [
            models.Index(
                fields=["generation", "available_since", "pet_id"],
                name="listing_longest_waiting",
                condition=models.Q(available=True),
            ),
            models.Index(
                fields=["generation", "species", "available_since", "pet_id"],
                name="listing_by_species",
                condition=models.Q(available=True),
            ),
            # A shelter's own list: without it a small shelter's pets were found by walking
            # every available pet in order (100,000 rows for a page of 20).
            models.Index(
                fields=["generation", "shelter_id", "available_since", "pet_id"],
                name="listing_by_shelter",
                condition=models.Q(available=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.species})"


class AdoptionHistoryEntry(models.Model):
    """adoption_history: each adoption and return of a pet, in order."""

    projection_key = "event_id"

    class Kind(models.TextChoices):
        ADOPTED = "adopted"
        RETURNED = "returned"

    generation = models.PositiveIntegerField()
    event_id = models.UUIDField()
    position = models.BigIntegerField()
    pet_id = models.UUIDField()
    shelter_id = models.UUIDField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    adoption_id = models.UUIDField(null=True, blank=True)
    customer_id = models.UUIDField(null=True, blank=True)
    customer_name = models.CharField(max_length=200, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    occurred_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["generation", "event_id"], name="one_history_entry_per_event")
        ]
        indexes = [
            models.Index(fields=["generation", "pet_id", "position"], name="history_of_pet"),
            models.Index(
                fields=["generation", "shelter_id", "kind", "occurred_at"], name="history_by_shelter"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pet_id} {self.kind} at {self.occurred_at}"


class ShelterDashboard(models.Model):
    """shelter_dashboard: how many pets each shelter has available, adopted and returned."""

    projection_key = "shelter_id"

    generation = models.PositiveIntegerField()
    shelter_id = models.UUIDField()
    shelter_name = models.CharField(max_length=200)
    available = models.IntegerField(default=0)
    adopted = models.IntegerField(default=0)
    returned = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["generation", "shelter_id"], name="one_dashboard_per_shelter")
        ]

    def __str__(self) -> str:
        return f"{self.shelter_name}: {self.available} available"
