"""Reads of the query tables, always from the projection's live generation."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import NamedTuple
from uuid import UUID

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from events import sql
from events.store import LogPosition, log_position_of

from .models import AdoptionHistoryEntry, PetListing, ProjectionState, ShelterDashboard
from .projector import live_generation_of, live_generation_sql

#: What a listing shows; days available are added from available_since at query time.
LISTING_FIELDS = (
    "pet_id",
    "name",
    "species",
    "age",
    "shelter_id",
    "shelter_name",
    "photo_url",
    "available_since",
)


class ListingKey(NamedTuple):
    """Where a listing stands in the order (longest waiting first): unique, so a page can
    start right after (or end right before) one."""

    available_since: datetime
    pet_id: UUID


class ListingPage(NamedTuple):
    position: int  # how far the projection had applied the log when the rows were read
    listings: list[dict]


def available_pet_page(
    *,
    species: str | None = None,
    max_age: int | None = None,
    shelter_id: UUID | None = None,
    key: ListingKey | None = None,
    backwards: bool = False,
    limit: int,
) -> ListingPage:
    """Up to `limit` available pets, longest waiting first, after `key` (from the start without
    one); `backwards`, the `limit` pets before `key` (the list's end without one). With the
    projection's position, read in the same statement, so from the same snapshot: the rows
    are exactly as new as the position an answer names, no more, no less.

    One range of an index (listing_longest_waiting, _by_species or _by_shelter) read in plain
    SQL (events/sql.py), as dicts of LISTING_FIELDS: a page is read on every visit to a
    shelter's window, and building and compiling the queryset, making twenty model instances
    or a second round trip for the position cost more than the read.
    """
    # The live generation as a subquery: no extra round trip.
    where, fields = [f"generation = ({live_generation_sql('%(projection)s')})", "available"], {}
    if species:
        where.append("species = %(species)s")
        fields["species"] = species
    if max_age is not None:
        where.append("age <= %(max_age)s")
    if shelter_id:
        where.append("shelter_id = %(shelter_id)s")
        fields["shelter_id"] = shelter_id
    if key:
        beyond = "<" if backwards else ">"
        where.append(f"(available_since, pet_id) {beyond} (%(available_since)s, %(pet_id)s)")
        fields.update(key._asdict())
    direction = "DESC" if backwards else "ASC"
    state, listing = ProjectionState._meta.db_table, PetListing._meta.db_table
    columns = ", ".join(PetListing._meta.get_field(name).column for name in LISTING_FIELDS)
    nothing = ", ".join(["NULL"] * len(LISTING_FIELDS))
    statement = (
        f"SELECT position, {nothing} FROM {state} WHERE name = %(projection)s UNION ALL"
        f" SELECT * FROM (SELECT CAST(NULL AS bigint), {columns} FROM {listing}"
        f" WHERE {' AND '.join(where)}"
        f" ORDER BY available_since {direction}, pet_id {direction} LIMIT {int(limit)}) page"
    )
    params = {"projection": "available_pets", "max_age": max_age, **sql.prepared(PetListing, **fields)}
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    positions = [row[0] for row in rows if row[0] is not None]
    listings = sql.converted(PetListing, list(LISTING_FIELDS), [row[1:] for row in rows if row[0] is None])
    page = sorted((dict(zip(LISTING_FIELDS, row, strict=True)) for row in listings), key=_listing_order)
    return ListingPage(positions[0] if positions else 0, page)


def _listing_order(listing: dict) -> tuple:  # a UNION's rows have no order of their own
    return listing["available_since"], listing["pet_id"]


def with_days_available(listings: list[dict]) -> list[dict]:
    """Count each listed pet's days available now: stored, it would be wrong tomorrow."""
    now = timezone.now()
    return [{**listing, "days_available": (now - listing["available_since"]).days} for listing in listings]


def adoption_history_list(*, pet_id: UUID) -> QuerySet[AdoptionHistoryEntry]:
    entries = AdoptionHistoryEntry.objects.filter(generation=live_generation_of("adoption_history"))
    return entries.filter(pet_id=pet_id).order_by("position")


def shelter_dashboard_list(*, shelter_ids: set[UUID] | None) -> list[dict]:
    """Counts per shelter, with this week's adoptions counted at query time (right every day)."""
    rows = ShelterDashboard.objects.filter(generation=live_generation_of("shelter_dashboard"))
    if shelter_ids is not None:
        rows = rows.filter(shelter_id__in=shelter_ids)
    today = timezone.localdate()
    # Monday 00:00 local time as a moment, not occurred_at's date: the index can bound that.
    week_start = timezone.make_aware(
        datetime.combine(today - timedelta(days=today.weekday()), datetime.min.time())
    )
    this_week = dict(
        AdoptionHistoryEntry.objects.filter(
            generation=live_generation_of("adoption_history"),
            kind=AdoptionHistoryEntry.Kind.ADOPTED,
            occurred_at__gte=week_start,
        )
        .values("shelter_id")
        .annotate(n=Count("id"))
        .values_list("shelter_id", "n")
    )
    return [
        {
            "shelter_id": row.shelter_id,
            "shelter_name": row.shelter_name,
            "available": row.available,
            "adopted": row.adopted,
            "returned": row.returned,
            "adoptions_this_week": this_week.get(row.shelter_id, 0),
        }
        for row in rows.order_by("shelter_name")
    ]


def projection_position(name: str) -> int:
    """How far the projection has applied the log. Read it before the rows an answer shows:
    they are then at least that new, so a header carrying it never claims an event the
    answer lacks (read after them, a batch committed in between could make it). Plain SQL
    (events/sql.py): the other query answers read it (available-pets reads it with its page,
    in one statement), and compiling it cost more than running it."""
    found = sql.select(ProjectionState, ["position"], where="name = %(name)s", params={"name": name})
    return found[0][0] if found else 0


class UnknownPosition(LookupError):
    pass


def projections_position(names: list[str]) -> int:
    """projection_position of the answer's projections together: the one furthest behind in
    the order they apply the log, so the header never claims what one of them lacks."""
    states = ProjectionState.objects.filter(name__in=names).values_list("transaction_id", "position")
    found = [LogPosition(*state) for state in states]
    return min(found).position if len(found) == len(names) else 0


def wait_until_projected(names: list[str], position: int, *, timeout: float) -> bool:
    """Wait (bounded) until each projection has applied the event at `position`.

    A projection stopped on a failed event short of it will not get there until staff act:
    the answer is given at once instead of after the whole wait."""
    target = log_position_of(position)
    if target is None:
        raise UnknownPosition(position)
    deadline = time.monotonic() + timeout
    failed = ProjectionState.Status.FAILED
    while True:
        states = ProjectionState.objects.filter(name__in=names).values_list(
            "transaction_id", "position", "status"
        )
        reached = [(LogPosition(txid, at) >= target, status) for txid, at, status in states]
        if len(reached) == len(names) and all(done for done, _ in reached):
            return True
        stuck = any(status == failed and not done for done, status in reached)
        if stuck or time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def failed_projections(names: list[str]) -> list[str]:
    failed = Q(status=ProjectionState.Status.FAILED)
    return list(ProjectionState.objects.filter(failed, name__in=names).values_list("name", flat=True))
