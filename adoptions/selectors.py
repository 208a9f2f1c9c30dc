"""Reads of the write side: always current, straight from the event log."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from events.store import StreamNotFound, stream_events
from events.models import StoredEvent

from .domain import Pet, PetNotFound
from .models import Adoption, PetRecord
from .permissions import visible_adoptions
from .services import pets


def pet_get(*, pet_id: UUID, as_of: datetime | None = None) -> Pet:
    """Return the pet now, or as it was at `as_of` (time travel)."""
    try:
        return pets.load(pet_id, as_of=as_of)
    except StreamNotFound:
        raise PetNotFound(pet_id) from None


def pet_record_get(*, pet_id: UUID) -> PetRecord:
    try:
        return PetRecord.objects.get(id=pet_id)
    except PetRecord.DoesNotExist:
        raise PetNotFound(pet_id) from None


def pet_event_list(*, pet_id: UUID) -> list[StoredEvent]:
    events = stream_events(pet_id)
    if not events:
        raise PetNotFound(pet_id)
    return events


def adoption_get(*, adoption_id: UUID, user) -> Adoption | None:
    """Return the adoption if this user may see it; otherwise as if it did not exist."""
    return visible_adoptions(user).filter(id=adoption_id).first()
