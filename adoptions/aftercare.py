"""What happens after an adoption besides paperwork: vet visit, welcome kit, counts, analytics.

Each function is called by one handler (adoptions/handlers.py) inside the transaction that
records the delivery, so its writes happen exactly once per event.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from django.db.models import Count, F
from django.db.models.functions import TruncDate
from django.utils import timezone

from events.sql import insert, saved

from .models import Adoption, AdoptionStats, PetRecord, ShelterInventory, VetAppointment, WelcomePackage

WELCOME_KITS = {
    "dog": "collar, lead, chew toy, puppy food sample",
    "cat": "scratching pad, feather toy, kitten food sample",
    "bird": "perch, millet spray, seed mix sample",
    "rabbit": "hay bale, chew sticks, pellet sample",
}


class NoVetSlots(ValueError):
    """The shelter's working hours leave no room for one appointment: retrying cannot help."""


def _vet_days(shelter, after: dt.datetime):
    """Yield the slots of each working day (weekdays), starting the day after `after`."""
    tz = timezone.get_current_timezone()
    day = timezone.localtime(after, tz).date() + dt.timedelta(days=1)
    step = dt.timedelta(minutes=shelter.vet_slot_minutes)
    while True:
        if day.weekday() < 5:
            slot = dt.datetime.combine(day, shelter.opens_at, tzinfo=tz)
            closing = dt.datetime.combine(day, shelter.closes_at, tzinfo=tz)
            slots = []
            while step and slot + step <= closing:
                slots.append(slot)
                slot += step
            if not slots:
                raise NoVetSlots(f"{shelter} has no {shelter.vet_slot_minutes}-minute vet slot in a day")
            yield day, slots
        day += dt.timedelta(days=1)


def _full_days(shelter, after: dt.datetime, slots_per_day: int) -> set[dt.date]:
    """Days with as many visits as the hours have slots, counted by the database: one row per
    day, not per visit. (Visits booked under other hours may leave such a day some room; it
    is passed over, never double-booked.)"""
    booked = VetAppointment.objects.filter(shelter_id=shelter.id, starts_at__gt=after)
    per_day = booked.annotate(day=TruncDate("starts_at")).values("day").annotate(n=Count("id"))
    return set(per_day.filter(n__gte=slots_per_day).values_list("day", flat=True))


def vet_appointment_schedule(*, adoption: Adoption) -> VetAppointment:
    """Book the first free slot; a slot taken concurrently makes us try the next one.

    Only the first day with room is read slot by slot, so booking stays cheap however far
    ahead the calendar is filled.
    """
    existing = VetAppointment.objects.filter(adoption=adoption).first()
    if existing:
        return existing
    full = None
    length = dt.timedelta(minutes=adoption.shelter.vet_slot_minutes)
    for day, slots in _vet_days(adoption.shelter, adoption.created_at):
        if full is None:
            full = _full_days(adoption.shelter, adoption.created_at, len(slots))
        if day in full:
            continue
        # Visits overlapping the day's slots, whatever the slot length when they were booked
        # (none is longer than a day: the lower bound keeps the index scan to two days).
        booked_visits = VetAppointment.objects.filter(
            shelter_id=adoption.shelter_id,
            starts_at__gt=slots[0] - dt.timedelta(days=1),
            starts_at__lt=slots[-1] + length,
            ends_at__gt=slots[0],
        ).values_list("starts_at", "ends_at")
        taken = list(booked_visits)
        for slot in slots:
            free = all(ends <= slot or slot + length <= starts for starts, ends in taken)
            if free and (booked := _book(adoption, slot, length)):
                return booked
    raise AssertionError("unreachable: the calendar never ends")


_BOOKED_FIELDS = [f for f in VetAppointment._meta.concrete_fields if not f.primary_key]


def _book(adoption: Adoption, slot: dt.datetime, length: dt.timedelta) -> VetAppointment | None:
    """Insert the appointment unless another adoption booked the slot (or one overlapping it)
    a moment ago.

    ON CONFLICT DO NOTHING, with no target so that it covers the overlap constraint too, spares
    the savepoint a caught IntegrityError would need (two more round trips for every adoption).
    """
    appointment = VetAppointment(
        adoption=adoption, shelter_id=adoption.shelter_id, starts_at=slot, ends_at=slot + length
    )
    inserted = insert(
        VetAppointment,
        _BOOKED_FIELDS,
        [appointment],
        on_conflict="ON CONFLICT DO NOTHING",
        returning="id",
    )
    if not inserted:  # the slot was taken, or (a step run twice at once) this adoption booked
        return VetAppointment.objects.filter(adoption=adoption).first()
    [(appointment.id,)] = inserted
    return saved(appointment)


def welcome_package_send(*, adoption: Adoption) -> WelcomePackage:
    # Runs once per adoption: the delivery record commits with this row (see events.delivery).
    return WelcomePackage.objects.create(
        adoption=adoption,
        ship_to=adoption.customer.address or f"{adoption.customer.full_name} (address to confirm)",
        contents=WELCOME_KITS.get(adoption.pet.species, "welcome letter"),
    )


def _increment(table, key: dict, **deltas: int) -> None:
    """Add to counters in one UPDATE; the first time, create the row (race-safe) and retry."""
    changes = {field: F(field) + delta for field, delta in deltas.items()}
    if table.objects.filter(**key).update(**changes) == 0:
        table.objects.get_or_create(**key)
        table.objects.filter(**key).update(**changes)


def inventory_apply(*, shelter_id: UUID, available: int = 0, adopted: int = 0, returned: int = 0) -> None:
    """Shift a shelter's counts by the given amounts."""
    _increment(
        ShelterInventory, {"shelter_id": shelter_id}, available=available, adopted=adopted, returned=returned
    )


def pet_shelter_id(pet_id: UUID) -> UUID:
    return PetRecord.objects.values_list("shelter_id", flat=True).get(id=pet_id)


def analytics_record(*, adoption: Adoption) -> None:
    day = timezone.localdate(adoption.created_at)
    key = {"shelter_id": adoption.shelter_id, "day": day, "species": adoption.pet.species}
    _increment(AdoptionStats, key, adoptions=1)
