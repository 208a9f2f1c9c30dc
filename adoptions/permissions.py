"""Who may do what: customers act for themselves, staff for their own shelters."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Q, QuerySet
from rest_framework.exceptions import PermissionDenied

from .models import Adoption, Customer


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


def require_shelter_staff(user, shelter_id: UUID) -> None:
    if not manages_shelter(user, shelter_id):
        raise PermissionDenied("Only staff of this pet's shelter may do this.", code="not_shelter_staff")


def visible_adoptions(user) -> QuerySet[Adoption]:
    """Adoptions a user may see: their own, and those of shelters they manage."""
    if user.is_superuser:
        return Adoption.objects.all()
    return Adoption.objects.filter(Q(customer__user=user) | Q(shelter__staff=user)).distinct()
