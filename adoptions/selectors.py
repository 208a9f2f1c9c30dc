"""Reads of the write side: always current, straight from the event log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from django.conf import settings
from django.db.models import F

from events import sql
from events.handlers import handlers_for
from events.models import Delivery, StoredEvent
from events.store import StreamNotFound, stream_events

from . import pets
from .domain import Pet, PetNotFound
from .models import Adoption, AdoptionStats, PetRecord, ShelterInventory
from .permissions import visible_adoptions


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
    events = stream_events(pet_id, Pet.stream_type)
    if not events:
        raise PetNotFound(pet_id)
    return events


def adoption_get(*, adoption_id: UUID, user) -> Adoption | None:
    """Return the adoption if this user may see it; otherwise as if it did not exist."""
    visible = visible_adoptions(user).select_related("certificate", "vet_appointment")
    return visible.filter(id=adoption_id).first()


@dataclass(frozen=True)
class AdoptionView:
    adoption: Adoption
    steps: list[AdoptionStep]
    details: AdoptionDetails


def adoption_view(adoption: Adoption) -> AdoptionView:
    """The adoption as the API and the admin show it: status, steps, certificate, vet date."""
    return AdoptionView(adoption, adoption_steps(adoption), adoption_details(adoption))


@dataclass(frozen=True)
class AdoptionDetails:
    certificate_url: str | None
    vet_appointment_date: datetime | None


def adoption_details(adoption: Adoption) -> AdoptionDetails:
    """Return where the certificate is served and when the vet expects the pet."""
    appointment = getattr(adoption, "vet_appointment", None)
    vet_date = appointment.starts_at if appointment else None
    return _details(adoption.id, hasattr(adoption, "certificate"), vet_date)


def adoption_details_by_id(adoption_id: UUID) -> AdoptionDetails:
    """adoption_details without loading the adoption: one plain SELECT (events/sql.py) asks for
    both, for the step that completes it, which runs once for every adoption."""
    certificate = Adoption.certificate.related.related_model  # notifications' model, not imported here
    appointment = Adoption.vet_appointment.related.related_model
    [(has_certificate, starts_at)] = sql.fetch(
        sql.Statement(
            f"SELECT EXISTS (SELECT 1 FROM {certificate._meta.db_table} WHERE adoption_id = %(id)s),"
            f" (SELECT starts_at FROM {appointment._meta.db_table} WHERE adoption_id = %(id)s)",
            sql.prepared(Adoption, id=adoption_id),
        )
    )
    [[vet_date]] = sql.converted(appointment, ["starts_at"], [[starts_at]])
    return _details(adoption_id, bool(has_certificate), vet_date)


def _details(adoption_id: UUID, has_certificate: bool, vet_date: datetime | None) -> AdoptionDetails:
    url = f"{settings.PUBLIC_BASE_URL}/api/adoptions/{adoption_id}/certificate" if has_certificate else None
    return AdoptionDetails(certificate_url=url, vet_appointment_date=vet_date)


@dataclass(frozen=True)
class AdoptionStep:
    name: str
    status: str
    attempts: int
    last_error: str
    finished_at: datetime | None


def _step_deliveries(adoption: Adoption):
    """The deliveries of the adoption's PetAdopted event (none before it has one)."""
    if adoption.adopted_event_id is None:
        return Delivery.objects.none()
    return Delivery.objects.filter(event_id=adoption.adopted_event_id)


@dataclass(frozen=True)
class SettlingAdoption:
    id: UUID
    status: str
    steps_succeeded: int  # as counted so far
    step_statuses: list[str]  # one per step, pending for a step not started


def adoption_locked_for_settling(*, adopted_event_id: UUID) -> SettlingAdoption | None:
    """Lock the adoption this PetAdopted event began; read its status and its steps' statuses.

    None when no adoption began with the event. Plain SQL (events/sql.py): every step of
    every adoption runs this, and compiling the two querysets cost more than running them.
    Two statements on purpose: under READ COMMITTED a statement reads from the snapshot it
    took when it began, so a join waiting on the lock would then miss the outcome the lock's
    previous holder just committed, and two last steps could each think the other unfinished.
    """
    locked = sql.select(
        Adoption,
        ["id", "status", "steps_succeeded"],
        where="adopted_event_id = %(adopted_event_id)s",
        params=sql.prepared(Adoption, adopted_event_id=adopted_event_id),
        for_update=True,
    )
    if not locked:
        return None
    recorded = dict(
        sql.select(
            Delivery,
            ["handler", "status"],
            where="event_id = %(event_id)s",
            params=sql.prepared(Delivery, event_id=adopted_event_id),
        )
    )
    steps = [recorded.get(handler.name, "pending") for handler in handlers_for("PetAdopted")]
    [(adoption_id, status, steps_succeeded)] = locked
    return SettlingAdoption(adoption_id, status, steps_succeeded, steps)


def adoption_steps(adoption: Adoption) -> list[AdoptionStep]:
    """Each handler of the adoption's PetAdopted event with its delivery (pending if none yet)."""
    deliveries = {d.handler: d for d in _step_deliveries(adoption)}
    steps = []
    for handler in handlers_for("PetAdopted"):
        delivery = deliveries.get(handler.name)
        if delivery is None:
            steps.append(AdoptionStep(handler.name, "pending", 0, "", None))
        else:
            steps.append(
                AdoptionStep(
                    handler.name,
                    delivery.status,
                    delivery.attempts,
                    delivery.last_error,
                    delivery.finished_at,
                )
            )
    return steps


def shelter_inventory_list(*, shelter_ids: set[UUID] | None) -> list[dict]:
    """Each shelter's animals as the inventory step counts them, by shelter name.

    None for shelter_ids: every shelter (superusers). A shelter no event has touched yet
    has no row, and is not listed."""
    rows = ShelterInventory.objects.all()
    if shelter_ids is not None:
        rows = rows.filter(shelter_id__in=shelter_ids)
    rows = rows.annotate(shelter_name=F("shelter__name")).order_by("shelter_name")
    return list(rows.values("shelter_id", "shelter_name", "available", "adopted", "returned", "updated_at"))


def adoption_stats_list(
    *, shelter_ids: set[UUID] | None, since: date, until: date, species: str | None = None
) -> list[dict]:
    """Adoptions per shelter, day and species (the analytics step's counts), oldest day first.

    None for shelter_ids: every shelter (superusers)."""
    stats = AdoptionStats.objects.filter(day__gte=since, day__lte=until)
    if shelter_ids is not None:
        stats = stats.filter(shelter_id__in=shelter_ids)
    if species:
        stats = stats.filter(species=species)
    stats = stats.annotate(shelter_name=F("shelter__name")).order_by("day", "shelter_name", "species")
    return list(stats.values("shelter_id", "shelter_name", "day", "species", "adoptions"))
