"""The staff console: shelters, customers, pets and adoptions, each scoped to the user's shelters.

Pets are event-sourced, so the admin never saves a PetRecord: adding calls pet_register,
renaming calls pet_rename, and the rest of a pet's state is read-only here.
"""

from __future__ import annotations

import json
import uuid
from uuid import UUID

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet
from django.http import HttpResponseRedirect
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime

from events.catalogue import Species
from events.context import CommandContext
from events.store import ConcurrencyConflict, stream_events

from . import services
from .domain import DomainError
from .models import Adoption, Customer, PetRecord, Shelter
from .permissions import managed_shelter_ids


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


def admin_context(request) -> CommandContext:
    """Record the staff member acting; each admin save is its own correlation."""
    return CommandContext(
        correlation_id=str(uuid.uuid4()), actor_id=str(request.user.pk), causation_id="admin"
    )


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


@admin.register(Shelter)
class ShelterAdmin(ShelterScopedAdmin):
    list_display = ["name", "contact_email", "pet_count"]
    ordering = ["name"]  # Meta.ordering does not apply once pet_count adds a GROUP BY
    search_fields = ["name"]
    filter_horizontal = ["staff"]

    def scope(self, queryset, shelter_ids):
        return queryset.filter(id__in=shelter_ids)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(pet_count=Count("pets"))

    @admin.display(description="pets", ordering="pet_count")
    def pet_count(self, shelter: Shelter) -> int:
        return shelter.pet_count

    def get_readonly_fields(self, request, obj=None):
        # The staff widget lists every user: only superusers choose who works where.
        return [] if request.user.is_superuser else ["staff"]

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(Customer)
class CustomerAdmin(ShelterScopedAdmin):
    list_display = ["full_name", "email", "user"]
    search_fields = ["full_name", "email"]
    raw_id_fields = ["user"]

    def scope(self, queryset, shelter_ids):
        adopted_here = Adoption.objects.filter(shelter__in=shelter_ids).values("customer_id")
        return queryset.filter(id__in=adopted_here)

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


class PetAddForm(forms.ModelForm):
    species = forms.ChoiceField(choices=[(s.value, s.value) for s in Species])
    age = forms.IntegerField(min_value=0, max_value=100)
    photo_url = forms.URLField(max_length=500, required=False, assume_scheme="https")

    class Meta:
        model = PetRecord
        fields = ["name", "species", "age", "shelter", "photo_url"]


class PetRenameForm(forms.ModelForm):
    # The version the page showed: a rename of a pet that changed meanwhile is refused.
    expected_version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)

    class Meta:
        model = PetRecord
        fields = ["name"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["expected_version"].initial = self.instance.version


STATE_FIELDS = ["status", "version", "registered_at", "updated_at"]
DESCRIPTION_FIELDS = ["id", "shelter", "species", "age", "photo_url"]


@admin.register(PetRecord)
class PetAdmin(ShelterScopedAdmin):
    list_display = ["name", "species", "age", "shelter", "status", "version", "updated_at"]
    list_filter = ["status", "species", ("shelter", OwnShelterFilter)]
    list_select_related = ["shelter"]
    search_fields = ["name"]

    def scope(self, queryset, shelter_ids):
        return queryset.filter(shelter__in=shelter_ids)

    def get_form(self, request, obj=None, **kwargs):
        kwargs["form"] = PetRenameForm if obj else PetAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": PetAddForm.Meta.fields})]
        editable = ["name"]
        if self.has_change_permission(request, obj):
            editable.append("expected_version")
        return [
            (None, {"fields": [*editable, *DESCRIPTION_FIELDS]}),
            ("Current state", {"fields": STATE_FIELDS}),
            ("Event timeline", {"fields": ["event_timeline"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        return [*DESCRIPTION_FIELDS, *STATE_FIELDS, "event_timeline"] if obj else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "shelter":
            kwargs["queryset"] = own_shelters(request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_delete_permission(self, request, obj=None):
        return False  # a pet's history is never erased

    def save_model(self, request, obj, form, change):
        """Record events through the services; the PetRecord follows from them."""
        data = form.cleaned_data
        if not change:
            registered = services.pet_register(
                shelter=data["shelter"], name=data["name"], species=Species(data["species"]),
                age=data["age"], photo_url=data["photo_url"] or None,
                context=admin_context(request),
            )
            obj.pk = registered.pet_id
            obj.refresh_from_db()
        elif "name" in form.changed_data:
            services.pet_rename(
                pet_id=obj.pk, new_name=data["name"], expected_version=data["expected_version"],
                context=admin_context(request),
            )

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except (ConcurrencyConflict, DomainError) as refused:
            # The admin's transaction has rolled back: no event, no log entry.
            self.message_user(request, f"Nothing was saved: {refused}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    @admin.display(description="events")
    def event_timeline(self, pet: PetRecord):
        events = stream_events(pet.id)
        actors = actor_names({e.metadata.get("actor_id") for e in events})
        rows = format_html_join(
            "\n",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    event.stream_version,
                    event.event_type,
                    json.dumps(event.payload, sort_keys=True),
                    localize(localtime(event.recorded_at)),
                    actors.get(event.metadata.get("actor_id"), "system"),
                    event.metadata.get("correlation_id") or "—",
                )
                for event in events
            ),
        )
        return format_html(
            '<table class="event-timeline"><thead><tr><th>Version</th><th>Event</th><th>Data</th>'
            "<th>Recorded at</th><th>Actor</th><th>Correlation</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )


def actor_names(actor_ids: set[str | None]) -> dict[str, str]:
    """Map metadata actor ids (user pks as text) to usernames."""
    pks = [pk for pk in actor_ids if pk and pk.isdigit()]
    users = get_user_model().objects.filter(pk__in=pks).values_list("pk", "username")
    names = {str(pk): username for pk, username in users}
    return {pk: names.get(pk, f"user {pk}") for pk in actor_ids if pk}


@admin.register(Adoption)
class AdoptionAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    list_display = ["id", "pet", "customer", "shelter", "status", "created_at", "returned_at"]
    list_filter = ["status", ("shelter", OwnShelterFilter)]
    list_select_related = ["pet", "customer", "shelter"]
    search_fields = ["pet__name", "customer__full_name"]

    def scope(self, queryset, shelter_ids):
        return queryset.filter(shelter__in=shelter_ids)
