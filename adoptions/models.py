"""Shelters, customers, adoptions, and the inline index of pets kept beside the event log."""

import uuid

from django.conf import settings
from django.db import models


class Shelter(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    contact_email = models.EmailField()
    staff = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="shelters", blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Customer(models.Model):
    """A person who adopts: a login (user) with a profile."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="customer"
    )
    full_name = models.CharField(max_length=200)
    email = models.EmailField()

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
    returned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["shelter", "-created_at"])]

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
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="one_answer_per_idempotency_key")
        ]
