"""Writes to the read models from outside the event log.

Shelters and customers are plain tables, not event streams: the projections copy their names
when they apply an event, so a name changed later is copied here, into every generation (a
rebuild in progress gets it too), with the projections' checkpoints locked. A projector batch
that read the old name then commits before us, and we correct its rows; one after us reads
the new name.
"""

from __future__ import annotations

from uuid import UUID

from django.db import transaction

from .models import AdoptionHistoryEntry, PetListing, ProjectionState, ShelterDashboard


def _hold(projections: list[str]) -> None:
    """Wait for the projections' running batches, and keep new ones out until we commit."""
    list(ProjectionState.objects.select_for_update().filter(name__in=projections).order_by("name"))


def shelter_renamed(*, shelter_id: UUID, name: str) -> None:
    with transaction.atomic():
        _hold(["available_pets", "shelter_dashboard"])
        PetListing.objects.filter(shelter_id=shelter_id).update(shelter_name=name)
        ShelterDashboard.objects.filter(shelter_id=shelter_id).update(shelter_name=name)


def customer_renamed(*, customer_id: UUID, full_name: str) -> None:
    with transaction.atomic():
        _hold(["adoption_history"])
        AdoptionHistoryEntry.objects.filter(customer_id=customer_id).update(customer_name=full_name)
