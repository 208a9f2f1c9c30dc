"""The JSON API: commands (write side) and the current state of pets and adoptions.

Views only translate: validate the input, check who is asking, call one service, render.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django.http import FileResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from events.context import CommandContext
from petstore.negotiation import OwnMediaTypeNegotiation
from petstore.openapi import command_schema, errors
from petstore.shared_serializers import represented, validated

from . import selectors, serializers, services
from .domain import DomainError
from .idempotency import idempotent
from .models import Customer, Shelter
from .permissions import customer_of, manages_shelter, require_shelter_staff, sees_adopter


class NotFound(DomainError):
    status = 404

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def command_context(request) -> CommandContext:
    """Correlation: the client's X-Correlation-ID, or a new one. Causation: the command that
    caused the events, named by the client's Idempotency-Key or X-Request-ID, or a new id."""
    correlation = request.headers.get("X-Correlation-ID", "")[:100] or str(uuid.uuid4())
    command = request.headers.get("Idempotency-Key") or request.headers.get("X-Request-ID", "")[:100]
    return CommandContext(
        correlation_id=correlation,
        actor_id=str(request.user.pk),
        causation_id=command or str(uuid.uuid4()),
    )


def position_headers(position: int, location: str | None = None) -> dict[str, str]:
    headers = {"X-Event-Position": str(position)}
    if location:
        headers["Location"] = location
    return headers


class RegisterPetView(APIView):
    """POST /api/commands/register-pet: a new pet in a shelter, by that shelter's staff."""

    @command_schema(
        request=serializers.RegisterPetInput,
        status=201,
        response=serializers.PetChangeOutput,
        errors_by_status={403: "`not_shelter_staff`", 404: "`shelter_not_found`"},
        location=True,
    )
    @idempotent
    def post(self, request):
        data = validated(serializers.RegisterPetInput, request.data)
        shelter = Shelter.objects.filter(id=data["shelter_id"]).first()
        if shelter is None:
            raise NotFound("shelter_not_found", f"Shelter {data['shelter_id']} does not exist.")
        require_shelter_staff(request.user, shelter.id)
        change = services.pet_register(
            shelter=shelter,
            name=data["name"],
            species=data["species"],
            age=data["age"],
            photo_url=data.get("photo_url"),
            context=command_context(request),
        )
        body = represented(serializers.PetChangeOutput, change)
        headers = position_headers(change.position, f"/api/pets/{change.pet_id}")
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)


def adopting_customer(user, customer_id) -> Customer:
    """Customers adopt only as themselves; staff name the customer they adopt for."""
    own = customer_of(user)
    if own is not None:
        if customer_id not in (None, own.id):
            raise PermissionDenied("Customers can only adopt for themselves.", code="forbidden")
        return own
    if customer_id is None:
        raise ValidationError({"customer_id": ["Staff must say which customer adopts."]})
    customer = Customer.objects.filter(id=customer_id).first()
    if customer is None:
        raise NotFound("customer_not_found", f"Customer {customer_id} does not exist.")
    return customer


class AdoptPetView(APIView):
    """POST /api/commands/adopt-pet and POST /api/adoptions: the same command."""

    @command_schema(
        request=serializers.AdoptPetInput,
        status=202,
        response=serializers.AdoptionStartedOutput,
        errors_by_status={
            403: "`forbidden` (a customer adopting for someone else), `not_shelter_staff`",
            404: "`pet_not_found`, `customer_not_found`",
            409: "`pet_not_available`, `shelter_mismatch`, `version_conflict`",
        },
        location=True,
    )
    @idempotent
    def post(self, request):
        data = validated(serializers.AdoptPetInput, request.data)
        if customer_of(request.user) is None:  # staff of the pet's shelter, before anything about customers
            pet = selectors.pet_record_get(pet_id=data["pet_id"])
            require_shelter_staff(request.user, pet.shelter_id)
        customer = adopting_customer(request.user, data.get("customer_id"))
        started = services.pet_adopt(
            pet_id=data["pet_id"],
            customer=customer,
            shelter_id=data.get("shelter_id"),
            expected_version=data.get("expected_version"),
            context=command_context(request),
        )
        body = represented(serializers.AdoptionStartedOutput, started)
        location = f"/api/adoptions/{started.adoption.id}"
        return Response(
            body, status=status.HTTP_202_ACCEPTED, headers=position_headers(started.position, location)
        )


class StaffPetCommandView(APIView):
    """Base for commands only staff of the pet's shelter may issue."""

    input_serializer: type
    service = None

    @idempotent
    def post(self, request):
        data = validated(self.input_serializer, request.data)
        pet = selectors.pet_record_get(pet_id=data["pet_id"])
        require_shelter_staff(request.user, pet.shelter_id)
        change = type(self).service(**data, context=command_context(request))
        body = represented(serializers.PetChangeOutput, change)
        return Response(body, headers=position_headers(change.position))


def staff_command_schema(request, conflicts: str):
    return extend_schema_view(
        post=command_schema(
            request=request,
            status=200,
            response=serializers.PetChangeOutput,
            errors_by_status={403: "`not_shelter_staff`", 404: "`pet_not_found`", 409: conflicts},
        )
    )


@staff_command_schema(serializers.ReturnPetInput, "`pet_not_adopted`, `version_conflict`")
class ReturnPetView(StaffPetCommandView):
    """POST /api/commands/return-pet: an adopted pet comes back to its shelter, with the reason."""

    input_serializer = serializers.ReturnPetInput
    service = staticmethod(services.pet_return)


@staff_command_schema(serializers.RenamePetInput, "`version_conflict`")
class RenamePetView(StaffPetCommandView):
    """POST /api/commands/rename-pet: a new name (the same name records nothing)."""

    input_serializer = serializers.RenamePetInput
    service = staticmethod(services.pet_rename)


def parse_moment(raw: str) -> datetime | None:
    """Return the date and time in `raw` in UTC (taken as UTC without an offset), or None.

    In UTC, because PostgreSQL refuses offsets past ±15:59 and SQLite cannot convert
    0001-01-01T00:00+05:00: either would be a 500 later instead of a 400 now.
    """
    try:
        moment = parse_datetime(raw)
        return moment and (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_as_of(raw: str) -> datetime:
    moment = parse_moment(raw)
    if moment is None:
        raise ValidationError({"as_of": ["Give an ISO 8601 date and time, e.g. 2026-03-13T10:00:00Z."]})
    return moment


class PetDetailView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "asOf",
                OpenApiTypes.DATETIME,
                description="Show the pet as it was at this moment (ISO 8601; UTC if no offset).",
            )
        ],
        responses={
            200: serializers.PetOutput,
            **errors({400: "`validation_error` (`asOf` is not a date and time)", 404: "`pet_not_found`"}),
        },
    )
    def get(self, request, pet_id):
        """The pet now, or as it was at `asOf` (time travel), replayed from its events."""
        raw = request.query_params.get("asOf")
        as_of = parse_as_of(raw) if raw else None
        pet = selectors.pet_get(pet_id=pet_id, as_of=as_of)
        body = represented(serializers.PetOutput, pet)
        if not sees_adopter(request.user, pet):  # who adopted it is theirs and the shelter's to know
            body["adopted_by"] = body["adoption_id"] = None
        if as_of:
            body["as_of"] = as_of.isoformat()
        return Response(body)


class PetEventsView(APIView):
    @extend_schema(
        responses={
            200: serializers.PetEventOutput(many=True),
            **errors({403: "`forbidden` (not staff of the pet's shelter)", 404: "`pet_not_found`"}),
        }
    )
    def get(self, request, pet_id):
        """The pet's whole event stream, oldest first (staff of its shelter)."""
        pet = selectors.pet_record_get(pet_id=pet_id)
        if not manages_shelter(request.user, pet.shelter_id):
            raise PermissionDenied("Only staff of this pet's shelter may read its history.")
        events = selectors.pet_event_list(pet_id=pet_id)
        return Response(serializers.PetEventOutput(events, many=True).data)


def visible_adoption(request, adoption_id):
    adoption = selectors.adoption_get(adoption_id=adoption_id, user=request.user)
    if adoption is None:
        raise NotFound("adoption_not_found", f"Adoption {adoption_id} does not exist.")
    return adoption


ADOPTION_NOT_FOUND = errors({404: "`adoption_not_found` (also for adoptions that are not yours)"})


class AdoptionDetailView(APIView):
    @extend_schema(responses={200: serializers.AdoptionOutput, **ADOPTION_NOT_FOUND})
    def get(self, request, adoption_id):
        """The adoption with its steps (its customer and its shelter's staff)."""
        adoption = visible_adoption(request, adoption_id)
        return Response(represented(serializers.AdoptionOutput, selectors.adoption_view(adoption)))


class AdoptionCertificateView(APIView):
    """The certificate PDF, for the adopting customer and the shelter's staff only."""

    content_negotiation_class = OwnMediaTypeNegotiation  # errors are JSON even to Accept: application/pdf

    @extend_schema(
        responses={
            (200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="The certificate."),
            **errors({404: "`adoption_not_found`, `certificate_not_ready`"}),
        },
    )
    def get(self, request, adoption_id):
        """The adoption certificate as a PDF, once its step has made it."""
        adoption = visible_adoption(request, adoption_id)
        certificate = getattr(adoption, "certificate", None)
        if certificate is None:
            raise NotFound("certificate_not_ready", "The certificate has not been generated yet.")
        return FileResponse(
            certificate.file.open("rb"),
            content_type="application/pdf",
            filename=f"adoption-certificate-{adoption.id}.pdf",
        )
