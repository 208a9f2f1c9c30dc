"""The query side of the API: fast answers from the read models, eventually consistent.

Each response names the projection's position (X-Projection-Position). A client that just
sent a command passes the position it got back as `minPosition`, and the query waits (a few
seconds at most) until the read model has caught up with it: read-your-writes over HTTP.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import partial
from uuid import UUID

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param
from rest_framework.views import APIView

from adoptions import selectors as adoption_selectors
from adoptions.api import NotFound, parse_moment
from adoptions.models import PetRecord
from adoptions.permissions import managed_shelter_ids, manages_shelter, require_shelter_staff
from events.catalogue import Species
from petstore.api_errors import error_response
from petstore.openapi import errors, query_schema
from petstore.shared_serializers import validated

from . import selectors
from .models import AdoptionHistoryEntry


class MinPositionQuery(serializers.Serializer):
    min_position = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="The `position` a command returned: wait (a few seconds at most) until the read model "
        "has applied that event, else answer 503 `projection_behind`. Read-your-writes over HTTP.",
    )


class AvailablePetsQuery(MinPositionQuery):
    species = serializers.ChoiceField(choices=[s.value for s in Species], required=False)
    max_age = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)  # the column's range
    shelter_id = serializers.UUIDField(required=False)
    cursor = serializers.CharField(required=False, help_text="From the `next` or `previous` link.")


class AvailablePetOutput(serializers.Serializer):
    """The shape of a listing, for the OpenAPI document. Answers are built from the selector's
    dicts without it (selectors.available_pet_page says why); a test holds the two together."""

    pet_id = serializers.UUIDField()
    name = serializers.CharField()
    species = serializers.ChoiceField(choices=[s.value for s in Species])
    age = serializers.IntegerField()
    shelter_id = serializers.UUIDField()
    shelter_name = serializers.CharField()
    photo_url = serializers.CharField()
    available_since = serializers.DateTimeField()
    days_available = serializers.IntegerField()


class AdoptionHistoryOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=AdoptionHistoryEntry.Kind.choices)
    adoption_id = serializers.UUIDField(allow_null=True)
    customer_id = serializers.UUIDField(allow_null=True)
    customer_name = serializers.CharField()
    reason = serializers.CharField()
    occurred_at = serializers.DateTimeField()
    position = serializers.IntegerField()


class AdoptionHistoryPage(serializers.Serializer):
    pet_id = serializers.UUIDField()
    entries = AdoptionHistoryOutput(many=True)


class ShelterCounts(serializers.Serializer):
    """A shelter's animals: the dashboard's (projected) and the inventory step's alike."""

    shelter_id = serializers.UUIDField()
    shelter_name = serializers.CharField()
    available = serializers.IntegerField()
    adopted = serializers.IntegerField()
    returned = serializers.IntegerField()


class ShelterDashboardOutput(ShelterCounts):
    adoptions_this_week = serializers.IntegerField()


class ShelterDashboardPage(serializers.Serializer):
    shelters = ShelterDashboardOutput(many=True)


#: The longest span one stats answer covers (a year and a day: a leap year's days, inclusive).
STATS_MAX_DAYS = 366


class AdoptionStatsQuery(serializers.Serializer):
    since = serializers.DateField(required=False, help_text="First day (default: 29 days before `until`).")
    until = serializers.DateField(required=False, help_text="Last day (default: today).")
    species = serializers.ChoiceField(choices=[s.value for s in Species], required=False)
    shelter_id = serializers.UUIDField(required=False, help_text="One of your shelters (default: all).")

    def validate(self, data):
        until = data.setdefault("until", timezone.localdate())
        if "since" not in data:  # 29 days before, or the first day there is (until=0001-01-01)
            data["since"] = until - timedelta(days=min(29, (until - date.min).days))
        since = data["since"]
        if since > until:
            raise serializers.ValidationError({"since": ["Must not be after `until`."]})
        if (until - since).days >= STATS_MAX_DAYS:
            raise serializers.ValidationError({"since": [f"At most {STATS_MAX_DAYS} days at once."]})
        return data


class AdoptionStatsRow(serializers.Serializer):
    shelter_id = serializers.UUIDField()
    shelter_name = serializers.CharField()
    day = serializers.DateField()
    species = serializers.ChoiceField(choices=[s.value for s in Species])
    adoptions = serializers.IntegerField()


class AdoptionStatsPage(serializers.Serializer):
    since = serializers.DateField()
    until = serializers.DateField()
    total = serializers.IntegerField()
    days = AdoptionStatsRow(many=True)


class ShelterInventoryRow(ShelterCounts):
    updated_at = serializers.DateTimeField()


class ShelterInventoryPage(serializers.Serializer):
    shelters = ShelterInventoryRow(many=True)


class LongestWaitingFirst(CursorPagination):
    """DRF's cursor links around pages read by key (selectors.available_pet_page).

    The order (available_since, pet_id) is unique, so a cursor holds the key of the listing
    its page starts after (or, going back, ends before) and each page is one range of an
    index: no offsets, and no queryset built and compiled on every visit. DRF still encodes
    and decodes the cursors, builds the links and the answer, and documents them.
    """

    page_size = 20
    ordering = ("available_since", "pet_id")

    def paginate_pages(self, read_page, request) -> list[dict]:
        """This request's page, read by read_page(key=…, backwards=…, limit=…), which also
        answers the read model's position (kept as self.position)."""
        self.request, self.base_url = request, request.build_absolute_uri()
        cursor = self.decode_cursor(request)
        key = self._key(cursor.position) if cursor and cursor.position is not None else None
        backwards = bool(cursor and cursor.reverse)
        self.position, rows = read_page(key=key, backwards=backwards, limit=self.page_size + 1)
        more = len(rows) > self.page_size
        if backwards:  # the pets just before the key; the page it came from lies ahead
            self.page = rows[-self.page_size :]
            self.has_previous, self.has_next = more, key is not None
        else:
            self.page = rows[: self.page_size]
            self.has_previous, self.has_next = key is not None, more
        return self.page

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        if not self.page:  # nothing is left before the key: the list starts there
            return remove_query_param(self.base_url, self.cursor_query_param)
        return self.encode_cursor(Cursor(offset=0, reverse=False, position=self._position(self.page[-1])))

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        # An empty page past the end (its pets were adopted meanwhile): back to the last page.
        position = self._position(self.page[0]) if self.page else None
        return self.encode_cursor(Cursor(offset=0, reverse=True, position=position))

    @staticmethod
    def _position(listing: dict) -> str:
        return f"{listing['available_since'].isoformat()}|{listing['pet_id']}"

    def _key(self, position: str) -> selectors.ListingKey:
        """The key a cursor names; one we did not give out is a 404 (not a 500 later)."""
        since, _, pet_id = position.partition("|")
        moment = parse_moment(since)
        try:
            if moment is not None:
                return selectors.ListingKey(moment, UUID(pet_id))
        except ValueError:
            pass
        raise exceptions.NotFound(self.invalid_cursor_message)


def query_params(serializer_class, request) -> dict:
    # The camelCase parser only handles bodies: query strings arrive as sent.
    return validated(serializer_class, {_snake(k): v for k, v in request.query_params.items()})


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def caught_up_or_503(projections: list[str], min_position: int | None):
    """Return an error response if the read model has not reached min_position in time."""
    if min_position is None:
        return None
    try:
        if selectors.wait_until_projected(
            projections, min_position, timeout=settings.PROJECTION_WAIT_SECONDS
        ):
            return None
    except selectors.UnknownPosition:
        return error_response(400, "unknown_position", f"No event has position {min_position}.")
    failed = selectors.failed_projections(projections)
    code, message = (
        ("projection_failed", f"{', '.join(failed)} stopped on an event; staff have been told.")
        if failed
        else ("projection_behind", "The read model has not caught up yet; retry shortly.")
    )
    return error_response(503, code, message, {"min_position": min_position}, headers={"Retry-After": "1"})


def staff_shelters(user, *, refusal: str) -> set[UUID] | None:
    """The shelters the caller manages (None: every one, for superusers); 403 `forbidden`
    with `refusal` for a caller who manages none."""
    managed = managed_shelter_ids(user)
    if managed is not None and not managed:
        raise exceptions.PermissionDenied(refusal, code="forbidden")
    return managed


def with_position(response: Response, position: int) -> Response:
    response["X-Projection-Position"] = str(position)
    return response


class AvailablePetsView(APIView):
    """GET /api/queries/available-pets — public, like a shelter's window."""

    permission_classes = [AllowAny]
    pagination_class = LongestWaitingFirst

    @query_schema(
        query=AvailablePetsQuery,
        response=AvailablePetOutput(many=True),
        errors_by_status={404: "`not_found` (the `cursor` is not one we gave out)"},
    )
    def get(self, request):
        """Available pets, longest waiting first, 20 a page with `next` / `previous` links."""
        params = query_params(AvailablePetsQuery, request)
        if (behind := caught_up_or_503(["available_pets"], params.get("min_position"))) is not None:
            return behind
        filters = {name: params.get(name) for name in ("species", "max_age", "shelter_id")}
        paginator = self.pagination_class()
        page = paginator.paginate_pages(partial(selectors.available_pet_page, **filters), request)
        response = paginator.get_paginated_response(selectors.with_days_available(page))
        return with_position(response, paginator.position)


class AdoptionHistoryView(APIView):
    """GET /api/queries/adoption-history/{petId} — staff of the pet's shelter."""

    @query_schema(
        query=MinPositionQuery,
        response=AdoptionHistoryPage,
        errors_by_status={403: "`forbidden` (not staff of the pet's shelter)", 404: "`pet_not_found`"},
    )
    def get(self, request, pet_id):
        """Every adoption and return of the pet, oldest first."""
        params = query_params(MinPositionQuery, request)
        pet = PetRecord.objects.filter(id=pet_id).first()
        if pet is None:
            raise NotFound("pet_not_found", f"Pet {pet_id} does not exist.")
        if not manages_shelter(request.user, pet.shelter_id):
            return error_response(403, "forbidden", "Only staff of this pet's shelter may read its history.")
        if (behind := caught_up_or_503(["adoption_history"], params.get("min_position"))) is not None:
            return behind
        position = selectors.projection_position("adoption_history")  # before the rows
        entries = selectors.adoption_history_list(pet_id=pet_id)
        body = {"pet_id": pet_id, "entries": AdoptionHistoryOutput(entries, many=True).data}
        return with_position(Response(body), position)


class ShelterDashboardView(APIView):
    """GET /api/queries/shelter-dashboard — each of the caller's shelters (all for admins)."""

    @query_schema(
        query=MinPositionQuery,
        response=ShelterDashboardPage,
        errors_by_status={403: "`forbidden` (only shelter staff have a dashboard)"},
    )
    def get(self, request):
        """Available, adopted and returned pets and this week's adoptions, per shelter."""
        params = query_params(MinPositionQuery, request)
        managed = staff_shelters(request.user, refusal="Only shelter staff have a dashboard.")
        shown = ["shelter_dashboard", "adoption_history"]  # the week's adoptions come from the history
        if behind := caught_up_or_503(shown, params.get("min_position")):
            return behind
        position = selectors.projections_position(shown)  # before the rows
        body = {"shelters": selectors.shelter_dashboard_list(shelter_ids=managed)}
        return with_position(Response(body), position)


class AdoptionStatsView(APIView):
    """GET /api/queries/adoption-stats — adoptions per day and species, for shelter staff."""

    @extend_schema(
        parameters=[AdoptionStatsQuery],
        responses={
            200: AdoptionStatsPage,
            **errors({400: "`validation_error`"}),
            **errors({403: "`forbidden` (only shelter staff), `not_shelter_staff` (not your shelter)"}),
        },
    )
    def get(self, request):
        """Adoptions per shelter, day and species, counted by the analytics step of each adoption.

        Kept by a side effect, so an adoption is counted a moment after its 202 (no
        `minPosition` here: these counts are not a projection of the log)."""
        params = query_params(AdoptionStatsQuery, request)
        managed = staff_shelters(request.user, refusal="Only shelter staff see adoption statistics.")
        if (shelter_id := params.get("shelter_id")) is not None:
            require_shelter_staff(request.user, shelter_id)
            managed = {shelter_id}
        rows = adoption_selectors.adoption_stats_list(
            shelter_ids=managed, since=params["since"], until=params["until"], species=params.get("species")
        )
        body = {
            "since": params["since"],
            "until": params["until"],
            "total": sum(row["adoptions"] for row in rows),
            "days": rows,
        }
        return Response(body)


class ShelterInventoryView(APIView):
    """GET /api/queries/shelter-inventory — each of the caller's shelters (all for admins)."""

    @extend_schema(
        responses={
            200: ShelterInventoryPage,
            **errors({403: "`forbidden` (only shelter staff see an inventory)"}),
        },
    )
    def get(self, request):
        """Animals per shelter as the inventory step of each registration, adoption and return
        counts them.

        Kept by a side effect, like the adoption statistics: an adoption is counted a moment
        after its 202 (no `minPosition`; the dashboard is the projection of the same counts)."""
        managed = staff_shelters(request.user, refusal="Only shelter staff see an inventory.")
        rows = adoption_selectors.shelter_inventory_list(shelter_ids=managed)
        return Response({"shelters": ShelterInventoryRow(rows, many=True).data})
