"""What happens after an adoption besides paperwork: vet visit, welcome kit, counts, analytics.

Each function is called by one handler (adoptions/handlers.py) inside the transaction that
records the delivery, so its writes happen exactly once per event.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from django.db import connection
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from events.sql import create, find, prepared, select

from .models import Adoption, AdoptionStats, PetRecord, ShelterInventory, VetAppointment, WelcomePackage

WELCOME_KITS = {
    "dog": "collar, lead, chew toy, puppy food sample",
    "cat": "scratching pad, feather toy, kitten food sample",
    "bird": "perch, millet spray, seed mix sample",
    "rabbit": "hay bale, chew sticks, pellet sample",
}


class NoVetSlots(ValueError):
    """The shelter's working hours leave no room for one appointment: retrying cannot help."""


def _working_days(after: dt.datetime):
    """Weekdays, local time, from the day after `after`, for ever."""
    day = timezone.localdate(after) + dt.timedelta(days=1)
    while True:
        if day.weekday() < 5:
            yield day
        day += dt.timedelta(days=1)


def _slots(shelter, day: dt.date) -> list[dt.datetime]:
    """The day's vet slots in the shelter's working hours."""
    tz = timezone.get_current_timezone()
    step = dt.timedelta(minutes=shelter.vet_slot_minutes)
    slot = dt.datetime.combine(day, shelter.opens_at, tzinfo=tz)
    closing = dt.datetime.combine(day, shelter.closes_at, tzinfo=tz)
    slots = []
    while step and slot + step <= closing:
        slots.append(slot)
        slot += step
    if not slots:
        raise NoVetSlots(f"{shelter} has no {shelter.vet_slot_minutes}-minute vet slot in a day")
    return slots


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
    ahead the calendar is filled. Booking twice gives the first appointment back: the second
    INSERT meets the one-appointment-per-adoption constraint (see _book), so there is no
    lookup before booking.
    """
    full = None  # read once the first day's slots tell how many visits fill a day
    length = dt.timedelta(minutes=adoption.shelter.vet_slot_minutes)
    for day in _working_days(adoption.created_at):
        if full is not None and day in full:
            continue  # passed over without building its slots: a calendar can be full for months
        slots = _slots(adoption.shelter, day)
        if full is None:
            full = _full_days(adoption.shelter, adoption.created_at, len(slots))
            if day in full:
                continue
        # Visits overlapping the day's slots, whatever the slot length when they were booked
        # (none is longer than a day: the lower bound keeps the index scan to two days).
        taken = select(
            VetAppointment,
            ["starts_at", "ends_at"],
            where="shelter_id = %(shelter)s AND starts_at > %(since)s AND starts_at < %(until)s"
            " AND ends_at > %(first)s",
            params={
                "since": _moment(slots[0] - dt.timedelta(days=1)),
                "until": _moment(slots[-1] + length),
                "first": _moment(slots[0]),
                **prepared(VetAppointment, shelter=adoption.shelter_id),
            },
        )
        for slot in slots:
            free = all(ends <= slot or slot + length <= starts for starts, ends in taken)
            if free and (booked := _book(adoption, slot, length)):
                return booked
    raise AssertionError("unreachable: the calendar never ends")


def _booked_for(adoption: Adoption) -> VetAppointment | None:
    """The adoption's appointment, if it has one (plain SQL, as the rest of booking)."""
    return find(VetAppointment, adoption=adoption.id)


def _moment(value: dt.datetime):
    return VetAppointment._meta.get_field("starts_at").get_db_prep_value(value, connection)


def _book(adoption: Adoption, slot: dt.datetime, length: dt.timedelta) -> VetAppointment | None:
    """Insert the appointment unless another adoption booked the slot (or one overlapping it)
    a moment ago.

    ON CONFLICT DO NOTHING, with no target so that it covers the overlap constraint too, spares
    the savepoint a caught IntegrityError would need (two more round trips for every adoption).
    """
    appointment = VetAppointment(
        adoption=adoption, shelter_id=adoption.shelter_id, starts_at=slot, ends_at=slot + length
    )
    # The slot was taken, or (a step run twice at once) this adoption booked: then None or ours.
    return create(appointment, on_conflict="ON CONFLICT DO NOTHING") or _booked_for(adoption)


def welcome_package_send(*, adoption: Adoption) -> WelcomePackage:
    # Runs once per adoption: the delivery record commits with this row (see events.delivery).
    return create(
        WelcomePackage(
            adoption=adoption,
            ship_to=adoption.customer.address or f"{adoption.customer.full_name} (address to confirm)",
            contents=WELCOME_KITS.get(adoption.pet.species, "welcome letter"),
        )
    )


def _increment(table, key: dict, **deltas: int) -> None:
    """Add to a row's counters; the first time, create it with them (race-safe).

    One upsert in plain SQL (events/sql.py): every adoption runs this twice, and an UPDATE
    compiled by the ORM (then get_or_create the first time) cost more than running it.
    """
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(table._meta.get_field(name).column)

    added = [f"{c} = {quote(table._meta.db_table)}.{c} + EXCLUDED.{c}" for c in map(column, deltas)]
    touched = [  # auto_now: the time of the last change
        f"{quote(f.column)} = EXCLUDED.{quote(f.column)}"
        for f in table._meta.concrete_fields
        if getattr(f, "auto_now", False)
    ]
    upsert = f"ON CONFLICT ({', '.join(map(column, key))}) DO UPDATE SET {', '.join(added + touched)}"
    create(table(**key, **deltas), on_conflict=upsert)


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
