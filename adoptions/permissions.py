"""Who may do what: customers act for themselves, staff for their own shelters."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Q, QuerySet
from rest_framework.exceptions import PermissionDenied

from events.models import StoredEvent

from .models import Adoption, Customer, PetRecord, Shelter

#: Redriving a dead delivery (or retrying an adoption step) needs this, besides seeing the row.
REDRIVE_PERMISSION = "events.change_delivery"


def customer_of(user) -> Customer | None:
    try:
        return user.customer
    except Customer.DoesNotExist:
        return None


def managed_shelter_ids(user) -> set[UUID] | None:
    """Return the shelters a user manages, or None for a superuser (all of them)."""
    if user.is_superuser:
        return None
    return set(user.shelters.values_list("id", flat=True))


def manages_shelter(user, shelter_id: UUID) -> bool:
    managed = managed_shelter_ids(user)
    return managed is None or shelter_id in managed


def sees_adopter(user, pet) -> bool:
    """Whether the user may see who adopted the pet: that customer, and staff of its shelter."""
    if pet.adopted_by is None:
        return True
    own = customer_of(user)
    return (own is not None and own.id == pet.adopted_by) or manages_shelter(user, pet.shelter_id)


def require_shelter_staff(user, shelter_id: UUID) -> None:
    if not manages_shelter(user, shelter_id):
        raise PermissionDenied("Only staff of this pet's shelter may do this.", code="not_shelter_staff")


def visible_adoptions(user) -> QuerySet[Adoption]:
    """Adoptions a user may see: their own, and those of shelters they manage."""
    if user.is_superuser:
        return Adoption.objects.all()
    return Adoption.objects.filter(Q(customer__user=user) | Q(shelter__staff=user)).distinct()


# --- the staff console's scoping -----------------------------------------------------------


def shelter_ids_of(request) -> set[UUID] | None:
    """Return the shelters the requesting user manages (None: all), once per request."""
    if not hasattr(request, "_managed_shelter_ids"):
        request._managed_shelter_ids = managed_shelter_ids(request.user)
    return request._managed_shelter_ids


def own_shelters(request) -> QuerySet[Shelter]:
    shelter_ids = shelter_ids_of(request)
    shelters = Shelter.objects.all()
    return shelters if shelter_ids is None else shelters.filter(id__in=shelter_ids)


def shelter_streams(shelter_ids: set[UUID]) -> Q:
    """Match event-log rows of these shelters' pets and adoptions (by stream id)."""
    pets = PetRecord.objects.filter(shelter__in=shelter_ids).values("id")
    adoptions = Adoption.objects.filter(shelter__in=shelter_ids).values("id")
    return Q(stream_id__in=pets) | Q(stream_id__in=adoptions)


def shelter_event_ids(shelter_ids: set[UUID]) -> QuerySet:
    """Event ids of these shelters' streams: for rows keyed by event (outbox, deliveries, …)."""
    return StoredEvent.objects.filter(shelter_streams(shelter_ids)).values("event_id")


def may_redrive(user) -> bool:
    return user.has_perm(REDRIVE_PERMISSION)
