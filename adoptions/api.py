"""The JSON API: commands (write side) and the current state of pets and adoptions.

Views only translate: validate the input, check who is asking, call one service, render.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django.http import FileResponse
from django.utils.dateparse import parse_datetime
from rest_framework import status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from events.context import CommandContext

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
    correlation = request.headers.get("X-Correlation-ID", "")[:100] or str(uuid.uuid4())
    return CommandContext(
        correlation_id=correlation,
        actor_id=str(request.user.pk),
        causation_id=request.headers.get("Idempotency-Key"),
    )


def validated(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def position_headers(position: int, location: str | None = None) -> dict[str, str]:
    headers = {"X-Event-Position": str(position)}
    if location:
        headers["Location"] = location
    return headers


class RegisterPetView(APIView):
    @idempotent
    def post(self, request):
        data = validated(serializers.RegisterPetInput, request)
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
        body = serializers.PetChangeOutput(change).data
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

    @idempotent
    def post(self, request):
        data = validated(serializers.AdoptPetInput, request)
        customer = adopting_customer(request.user, data.get("customer_id"))
        if customer_of(request.user) is None:
            pet = selectors.pet_record_get(pet_id=data["pet_id"])
            require_shelter_staff(request.user, pet.shelter_id)
        started = services.pet_adopt(
            pet_id=data["pet_id"],
            customer=customer,
            shelter_id=data.get("shelter_id"),
            expected_version=data.get("expected_version"),
            context=command_context(request),
        )
        body = serializers.AdoptionStartedOutput(started).data
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
        data = validated(self.input_serializer, request)
        pet = selectors.pet_record_get(pet_id=data["pet_id"])
        require_shelter_staff(request.user, pet.shelter_id)
        change = type(self).service(**data, context=command_context(request))
        body = serializers.PetChangeOutput(change).data
        return Response(body, headers=position_headers(change.position))


class ReturnPetView(StaffPetCommandView):
    input_serializer = serializers.ReturnPetInput
    service = staticmethod(services.pet_return)


class RenamePetView(StaffPetCommandView):
    input_serializer = serializers.RenamePetInput
    service = staticmethod(services.pet_rename)


def parse_as_of(raw: str) -> datetime:
    try:
        moment = parse_datetime(raw)
    except ValueError:
        moment = None
    if moment is None:
        raise ValidationError({"as_of": ["Give an ISO 8601 date and time, e.g. 2026-03-13T10:00:00Z."]})
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class PetDetailView(APIView):
    def get(self, request, pet_id):
        raw = request.query_params.get("asOf")
        as_of = parse_as_of(raw) if raw else None
        pet = selectors.pet_get(pet_id=pet_id, as_of=as_of)
        body = serializers.PetOutput(pet).data
        if not sees_adopter(request.user, pet):  # who adopted it is theirs and the shelter's to know
            body["adopted_by"] = body["adoption_id"] = None
        if as_of:
            body["as_of"] = as_of.isoformat()
        return Response(body)


class PetEventsView(APIView):
    def get(self, request, pet_id):
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


class AdoptionDetailView(APIView):
    def get(self, request, adoption_id):
        adoption = visible_adoption(request, adoption_id)
        return Response(serializers.AdoptionOutput(selectors.adoption_view(adoption)).data)


class AdoptionCertificateView(APIView):
    """The certificate PDF, for the adopting customer and the shelter's staff only."""

    def get(self, request, adoption_id):
        adoption = visible_adoption(request, adoption_id)
        certificate = getattr(adoption, "certificate", None)
        if certificate is None:
            raise NotFound("certificate_not_ready", "The certificate has not been generated yet.")
        return FileResponse(
            certificate.file.open("rb"),
            content_type="application/pdf",
            filename=f"adoption-certificate-{adoption.id}.pdf",
        )
