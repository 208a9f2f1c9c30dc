"""Shelters, customers, adoptions, and the inline index of pets kept beside the event log."""

import datetime
import uuid

from django.conf import settings
from django.db import models


class Shelter(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    contact_email = models.EmailField()
    staff = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="shelters", blank=True)
    # The vet's calendar: appointments on weekdays between these hours, one per slot.
    opens_at = models.TimeField(default=datetime.time(9, 0))
    closes_at = models.TimeField(default=datetime.time(17, 0))
    vet_slot_minutes = models.PositiveSmallIntegerField(default=30)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(closes_at__gt=models.F("opens_at")),
                name="shelter_closes_after_it_opens",
                violation_error_message="The shelter must close after it opens.",
            ),
            models.CheckConstraint(
                condition=models.Q(vet_slot_minutes__gte=5),
                name="vet_slot_at_least_5_minutes",
                violation_error_message="A vet slot lasts at least 5 minutes.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Customer(models.Model):
    """A person who adopts: a login (user) with a profile."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="customer")
    full_name = models.CharField(max_length=200)
    email = models.EmailField()
    address = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["full_name"]

    def __str__(self) -> str:
        return f"{self.full_name} <{self.email}>"


class PetRecord(models.Model):
    """Each pet's current state, updated in the transaction that appends its events.

    The event log stays the source of truth; this row lets the admin list, filter and scope
    pets by shelter without replaying every stream.
    """

    class Status(models.TextChoices):
        AVAILABLE = "available"
        ADOPTED = "adopted"

    id = models.UUIDField(primary_key=True, editable=False)
    shelter = models.ForeignKey(Shelter, on_delete=models.PROTECT, related_name="pets")
    name = models.CharField(max_length=100)
    species = models.CharField(max_length=20)
    age = models.PositiveSmallIntegerField()
    photo_url = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices)
    version = models.PositiveIntegerField()
    registered_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "pet"
        ordering = ["name"]
        indexes = [models.Index(fields=["shelter", "status"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.species})"


class Adoption(models.Model):
    class Status(models.TextChoices):
        PROCESSING = "processing"
        COMPLETED = "completed"
        NEEDS_ATTENTION = "needs_attention"
        RETURNED = "returned"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pet = models.ForeignKey(PetRecord, on_delete=models.PROTECT, related_name="adoptions")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="adoptions")
    shelter = models.ForeignKey(Shelter, on_delete=models.PROTECT, related_name="adoptions")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROCESSING)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    returned_at = models.DateTimeField(null=True, blank=True)
    #: The PetAdopted event whose handlers are this adoption's steps.
    adopted_event_id = models.UUIDField(null=True, blank=True, unique=True)
    #: How many of those steps have succeeded, counted in each step's own transaction, so the
    #: step that makes it all of them knows without reading the others (services.adoption_step_succeeded).
    steps_succeeded = models.PositiveSmallIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["shelter", "-created_at"]),
            # The few in progress, for chores.recount_adoption_steps.
            models.Index(
                fields=["created_at"], name="adoption_in_progress", condition=models.Q(status="processing")
            ),
        ]

    def __str__(self) -> str:
        return f"adoption {self.id}"


class IdempotentRequest(models.Model):
    """The answer given to a command sent with an Idempotency-Key, replayed on retries."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    response_headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="one_answer_per_idempotency_key")]

    def __str__(self) -> str:
        return f"{self.key} ({self.endpoint})"


class VetAppointment(models.Model):
    """The first vet visit: one slot of the shelter's calendar, never two in one slot.

    On PostgreSQL no two visits of a shelter overlap either (an exclusion constraint,
    migration 0005): staff may change the hours or the slot length after visits are booked.
    """

    adoption = models.OneToOneField(Adoption, on_delete=models.PROTECT, related_name="vet_appointment")
    shelter = models.ForeignKey(Shelter, on_delete=models.PROTECT, related_name="vet_appointments")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()  # the slot's length when it was booked

    class Meta:
        ordering = ["starts_at"]
        constraints = [
            models.UniqueConstraint(fields=["shelter", "starts_at"], name="one_appointment_per_slot")
        ]

    def __str__(self) -> str:
        return f"vet visit {self.starts_at:%Y-%m-%d %H:%M} at {self.shelter}"


class WelcomePackage(models.Model):
    """The shipment of a welcome kit to the new family."""

    adoption = models.OneToOneField(Adoption, on_delete=models.PROTECT, related_name="welcome_package")
    ship_to = models.TextField()
    contents = models.CharField(max_length=300)
    status = models.CharField(max_length=20, default="prepared")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"welcome package for {self.adoption_id}: {self.status}"


class ShelterInventory(models.Model):
    """How many animals each shelter holds: kept by the inventory handler."""

    shelter = models.OneToOneField(
        Shelter, on_delete=models.CASCADE, primary_key=True, related_name="inventory"
    )
    available = models.IntegerField(default=0)
    adopted = models.IntegerField(default=0)
    returned = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "shelter inventories"

    def __str__(self) -> str:
        return f"{self.shelter}: {self.available} available, {self.adopted} adopted"


class AdoptionStats(models.Model):
    """Analytics: adoptions per shelter per day per species."""

    shelter = models.ForeignKey(Shelter, on_delete=models.CASCADE, related_name="adoption_stats")
    day = models.DateField()
    species = models.CharField(max_length=20)
    adoptions = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "adoption statistics"
        ordering = ["-day", "shelter", "species"]
        constraints = [
            models.UniqueConstraint(fields=["shelter", "day", "species"], name="one_stats_row_per_day")
        ]

    def __str__(self) -> str:
        return f"{self.shelter} {self.day} {self.species}: {self.adoptions}"
