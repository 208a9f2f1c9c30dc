"""Admin building blocks that keep each shelter's staff to their own shelters' rows."""

from __future__ import annotations

from uuid import UUID

from django.contrib import admin
from django.db.models import QuerySet

from .permissions import own_shelters, shelter_ids_of


class ShelterScopedAdmin(admin.ModelAdmin):
    """Staff see only their shelters' rows, in lists and by URL; superusers see all."""

    def scope(self, queryset: QuerySet, shelter_ids: set[UUID]) -> QuerySet:
        raise NotImplementedError

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        shelter_ids = shelter_ids_of(request)
        return queryset if shelter_ids is None else self.scope(queryset, shelter_ids)

    def in_scope(self, request, obj) -> bool:
        return obj is None or self.get_queryset(request).filter(pk=obj.pk).exists()

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and self.in_scope(request, obj)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self.in_scope(request, obj)


class ReadOnlyAdminMixin:
    """Rows written by the domain (or an append-only log): shown, never edited here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OwnShelterFilter(admin.RelatedFieldListFilter):
    """Offer only the shelters the user manages."""

    def field_choices(self, field, request, model_admin):
        return [(shelter.pk, str(shelter)) for shelter in own_shelters(request)]
