"""The staff console: shelters, customers, pets, adoptions and what the adoption steps made.

Every page is scoped to the user's shelters (superusers see all).

Pets are event-sourced, so the admin never saves a PetRecord: adding calls pet_register,
renaming calls pet_rename, recording a return calls pet_return, and the rest of a pet's state
is read-only here. Each form checks its input against the event's declaration, so whatever
the event refuses is shown on the form instead of failing the save.
"""

from __future__ import annotations

import json
import uuid

import pydantic
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.timezone import localtime
from django.views.decorators.http import require_POST

from events.catalogue import DomainEvent, PetNameChanged, PetRegistered, PetReturned, Species
from events.context import CommandContext
from events.delivery import redrive
from events.store import ConcurrencyConflict, stream_events
from readmodels import services as readmodel_services

from . import selectors, services
from .admin_scoping import OwnShelterFilter, ReadOnlyAdminMixin, ShelterScopedAdmin
from .domain import DomainError, Pet
from .models import (
    Adoption,
    AdoptionStats,
    Customer,
    PetRecord,
    Shelter,
    ShelterInventory,
    VetAppointment,
    WelcomePackage,
)
from .permissions import may_redrive, own_shelters


def admin_context(request) -> CommandContext:
    """Record the staff member acting; each admin save is its own correlation."""
    return CommandContext(
        correlation_id=str(uuid.uuid4()), actor_id=str(request.user.pk), causation_id="admin"
    )


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

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "name" in form.changed_data:  # the read models keep copies of it
            readmodel_services.shelter_renamed(shelter_id=obj.id, name=obj.name)

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

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "full_name" in form.changed_data:  # adoption_history keeps copies of it
            readmodel_services.customer_renamed(customer_id=obj.id, full_name=obj.full_name)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


def check_declared(form: forms.Form, event_type: type[DomainEvent], field_of=None, **values) -> None:
    """Validate the event the form would record; put each refusal on its form field."""
    try:
        event_type.model_validate(values)
    except pydantic.ValidationError as invalid:
        for error in invalid.errors():
            name = (field_of or {}).get(error["loc"][0], error["loc"][0]) if error["loc"] else None
            form.add_error(name if name in form.fields else None, error["msg"])


class PetAddForm(forms.ModelForm):
    species = forms.ChoiceField(choices=[(s.value, s.value) for s in Species])
    age = forms.IntegerField(min_value=0, max_value=100)
    photo_url = forms.URLField(max_length=500, required=False, assume_scheme="https")

    class Meta:
        model = PetRecord
        fields = ["name", "species", "age", "shelter", "photo_url"]

    def clean(self):
        data = super().clean()
        if not self.errors:  # a missing field is already said; no need to say it twice
            check_declared(
                self,
                PetRegistered,
                {"shelter_id": "shelter"},
                name=data["name"],
                species=data["species"],
                age=data["age"],
                shelter_id=data["shelter"].id,
                photo_url=data["photo_url"] or None,
            )
        return data


class PetRenameForm(forms.ModelForm):
    # The version the page showed: a rename of a pet that changed meanwhile is refused.
    expected_version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)

    class Meta:
        model = PetRecord
        fields = ["name"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["expected_version"].initial = self.instance.version

    def clean(self):
        data = super().clean()
        if not self.errors and "name" in self.changed_data:
            # The instance still holds the saved name: _post_clean copies the new one in later.
            old_name = self.instance.name
            check_declared(
                self, PetNameChanged, {"new_name": "name"}, old_name=old_name, new_name=data["name"]
            )
        return data


class PetReturnForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        max_length=1000,
        help_text="Why the pet came back: kept in its event history.",
    )
    expected_version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)

    def clean(self):
        data = super().clean()
        if not self.errors:
            check_declared(self, PetReturned, reason=data["reason"])
        return data


STATE_FIELDS = ["status", "version", "registered_at", "updated_at"]
DESCRIPTION_FIELDS = ["id", "shelter", "species", "age", "photo_url"]


@admin.register(PetRecord)
class PetAdmin(ShelterScopedAdmin):
    list_display = ["name", "species", "age", "shelter", "status", "version", "updated_at"]
    list_filter = ["status", "species", ("shelter", OwnShelterFilter)]
    list_select_related = ["shelter"]
    search_fields = ["name", "=id"]
    search_help_text = "A name, or a pet's whole id."

    def scope(self, queryset, shelter_ids):
        return queryset.filter(shelter__in=shelter_ids)

    def get_urls(self):
        record_return = self.admin_site.admin_view(self.return_view)
        own = [path("<path:object_id>/return/", record_return, name="adoptions_petrecord_return")]
        return own + super().get_urls()  # before the catch-all "<path:object_id>/"

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        response = super().render_change_form(request, context, add, change, form_url, obj)
        # An adopted pet's page offers "Record a return" to those who may change the pet (the
        # permission Django just checked for this page; the response renders lazily).
        if obj and obj.status == PetRecord.Status.ADOPTED and response.context_data["has_change_permission"]:
            response.context_data["return_url"] = reverse("admin:adoptions_petrecord_return", args=[obj.pk])
        return response

    def return_view(self, request, object_id):
        """Ask why an adopted pet came back, then record the return through pet_return."""
        pet = self.get_object(request, unquote(object_id))
        if pet is None:
            raise Http404("no such pet")  # another shelter's pet: as if missing
        if not self.has_change_permission(request, pet):
            raise PermissionDenied
        form = PetReturnForm(request.POST or None, initial={"expected_version": pet.version})
        if form.is_valid() and self.record_return(request, pet, form):
            return HttpResponseRedirect(reverse("admin:adoptions_petrecord_change", args=[pet.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": pet,
            "adoption": pet.adoptions.filter(returned_at__isnull=True).select_related("customer").first(),
            "form": form,
            "title": f"Record the return of {pet.name}",
        }
        return TemplateResponse(request, "admin/adoptions/petrecord/return_form.html", context)

    def record_return(self, request, pet: PetRecord, form: PetReturnForm) -> bool:
        """Call pet_return; say on the form why it was refused, if it was."""
        reason = form.cleaned_data["reason"]
        try:
            services.pet_return(
                pet_id=pet.pk,
                reason=reason,
                expected_version=form.cleaned_data["expected_version"],
                context=admin_context(request),
            )
        except (ConcurrencyConflict, DomainError) as refused:
            form.add_error(None, f"Nothing was recorded: {refused}")
            return False
        self.log_change(request, pet, f"Recorded a return: {reason}")
        self.message_user(
            request, f"{pet.name} is back at {pet.shelter} and available again.", messages.SUCCESS
        )
        return True

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
                shelter=data["shelter"],
                name=data["name"],
                species=Species(data["species"]),
                age=data["age"],
                photo_url=data["photo_url"] or None,
                context=admin_context(request),
            )
            obj.pk = registered.pet_id
            obj.refresh_from_db()
        elif "name" in form.changed_data:
            services.pet_rename(
                pet_id=obj.pk,
                new_name=data["name"],
                expected_version=data["expected_version"],
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
        events = stream_events(pet.id, Pet.stream_type)
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


STEP_RETRY_FORM = "adoption-step-retry"  # its id in admin/adoptions/adoption/change_form.html
PROGRESS = (
    '<div class="adoption-progress"><p>Status: <strong>{}</strong> · Certificate: {} · '
    "Vet appointment: {}</p>"
    '<table class="adoption-steps"><thead><tr><th>Step</th><th>Status</th><th>Attempts</th>'
    "<th>Last error</th><th>Finished at</th><th></th></tr></thead>"
    "<tbody>{}</tbody></table></div>"
)
STEP_ROW = (
    '<tr class="step-{}"><td>{}</td><td>{}</td><td>{}</td><td title="{}">{}</td><td>{}</td><td>{}</td></tr>'
)


def progress_table(adoption: Adoption, *, retry_form: str | None):
    """Render the adoption's summary and one row per step; dead steps get a Retry button."""
    view = selectors.adoption_view(adoption)
    rows = format_html_join(
        "\n",
        STEP_ROW,
        (
            (
                step.status,
                step.name,
                step.status,
                step.attempts,
                step.last_error,
                Truncator(step.last_error).chars(200) or "—",
                when(step.finished_at, "—"),
                retry_button(step.name, retry_form) if step.status == "dead" and retry_form else "",
            )
            for step in view.steps
        ),
    )
    certificate = certificate_link(adoption) if view.details.certificate_url else "not made yet"
    vet_date = when(view.details.vet_appointment_date, "not scheduled yet")
    return format_html(PROGRESS, adoption.status, certificate, vet_date, rows)


def when(moment, otherwise: str) -> str:
    return localize(localtime(moment)) if moment else otherwise


def certificate_link(adoption: Adoption):
    # The API's URL, relative so it stays on the admin's host and session cookie.
    url = reverse("adoption-certificate", args=[adoption.id])
    return format_html('<a href="{}">certificate (PDF)</a>', url)


def retry_button(handler: str, form_id: str):
    # Forms cannot nest, so the form lives after the change form and `form=` points at it.
    return format_html(
        '<button type="submit" form="{}" name="handler" value="{}" class="button">Retry</button>',
        form_id,
        handler,
    )


ADOPTION_FIELDS = [
    "id",
    "pet",
    "customer",
    "shelter",
    "status",
    "created_at",
    "completed_at",
    "returned_at",
    "adopted_event_id",
]


@admin.register(Adoption)
class AdoptionAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    """Adoptions are read-only; their page shows each step, and staff may retry a dead one."""

    list_display = ["id", "pet", "customer", "shelter", "status", "created_at", "returned_at"]
    list_filter = ["status", ("shelter", OwnShelterFilter)]
    list_select_related = ["pet", "customer", "shelter"]
    search_fields = ["pet__name", "customer__full_name"]
    readonly_fields = [*ADOPTION_FIELDS, "progress", "progress_with_retry"]

    def scope(self, queryset, shelter_ids):
        return queryset.filter(shelter__in=shelter_ids)

    def get_fieldsets(self, request, obj=None):
        progress = "progress_with_retry" if may_redrive(request.user) else "progress"
        return [(None, {"fields": ADOPTION_FIELDS}), ("Steps", {"fields": [progress]})]

    # The same table twice: with Retry buttons only for users who may redrive.
    @admin.display(description="progress")
    def progress(self, adoption: Adoption):
        return progress_table(adoption, retry_form=None)

    @admin.display(description="progress")
    def progress_with_retry(self, adoption: Adoption):
        return progress_table(adoption, retry_form=STEP_RETRY_FORM)

    def get_urls(self):
        retry = self.admin_site.admin_view(require_POST(self.step_retry_view))
        own = [path("<path:object_id>/retry/", retry, name="adoptions_adoption_retry")]
        return own + super().get_urls()  # before the catch-all "<path:object_id>/"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = {"step_retry_form": STEP_RETRY_FORM} if may_redrive(request.user) else {}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def step_retry_view(self, request, object_id):
        """Give a dead step of this adoption a fresh set of attempts, then show its page."""
        adoption = self.get_object(request, unquote(object_id))
        if adoption is None or not self.has_view_permission(request, adoption):
            raise Http404("no such adoption")  # another shelter's adoption: as if missing
        if not may_redrive(request.user):
            raise PermissionDenied
        handler = request.POST.get("handler", "")
        self.message_user(request, *self.step_retry(adoption, handler))
        return HttpResponseRedirect(reverse("admin:adoptions_adoption_change", args=[adoption.pk]))

    def step_retry(self, adoption: Adoption, handler: str) -> tuple[str, int]:
        """Redrive the step; return the message for the user and its level."""
        steps = {step.name for step in selectors.adoption_steps(adoption)}
        if handler not in steps or adoption.adopted_event_id is None:
            return f"Not a step of this adoption: {handler!r}.", messages.ERROR
        if redrive(handler=handler, event_id=adoption.adopted_event_id):
            return f"Retrying step {handler}: it has a fresh set of attempts.", messages.SUCCESS
        return f"Nothing to retry: step {handler} is not dead.", messages.WARNING


# --- what the adoption steps wrote: shown, never edited --------------------------------------


@admin.register(VetAppointment)
class VetAppointmentAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    list_display = ["starts_at", "shelter", "adoption"]
    list_filter = [("shelter", OwnShelterFilter)]
    list_select_related = ["shelter", "adoption"]
    date_hierarchy = "starts_at"

    def scope(self, queryset, shelter_ids):
        return queryset.filter(shelter__in=shelter_ids)


@admin.register(WelcomePackage)
class WelcomePackageAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    list_display = ["adoption", "contents", "ship_to", "status", "created_at"]
    list_filter = ["status"]
    list_select_related = ["adoption"]

    def scope(self, queryset, shelter_ids):
        return queryset.filter(adoption__shelter__in=shelter_ids)


@admin.register(ShelterInventory)
class ShelterInventoryAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    list_display = ["shelter", "available", "adopted", "returned", "updated_at"]
    list_select_related = ["shelter"]
    ordering = ["shelter__name"]

    def scope(self, queryset, shelter_ids):
        return queryset.filter(shelter__in=shelter_ids)


@admin.register(AdoptionStats)
class AdoptionStatsAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    list_display = ["day", "shelter", "species", "adoptions"]
    list_filter = ["species", ("shelter", OwnShelterFilter)]
    list_select_related = ["shelter"]
    date_hierarchy = "day"

    def scope(self, queryset, shelter_ids):
        return queryset.filter(shelter__in=shelter_ids)
