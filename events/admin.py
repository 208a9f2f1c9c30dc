"""The staff console's view of the event log and the outbox: read-only, scoped by shelter."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Min
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from adoptions.admin import ReadOnlyAdminMixin, ShelterScopedAdmin, shelter_streams

from .models import OutboxMessage, StoredEvent
from .outbox import Backlog

STREAM_PAGES = {
    "pet": "admin:adoptions_petrecord_change",
    "adoption": "admin:adoptions_adoption_change",
}


@admin.register(StoredEvent)
class StoredEventAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    """The append-only log: no add, change or delete, whoever asks."""

    list_display = [
        "position", "event_type", "stream_type", "stream", "stream_version", "recorded_at",
    ]
    list_filter = ["event_type", "stream_type"]
    search_fields = ["stream_id"]
    ordering = ["-position"]
    show_full_result_count = False  # the log grows without bound; skip the second COUNT(*)

    def scope(self, queryset, shelter_ids):
        return queryset.filter(shelter_streams(shelter_ids))

    @admin.display(description="stream", ordering="stream_id")
    def stream(self, event: StoredEvent):
        page = STREAM_PAGES.get(event.stream_type)
        if page is None:
            return str(event.stream_id)
        url = reverse(page, args=[event.stream_id])
        return format_html('<a href="{}">{}</a>', url, event.stream_id)


class PendingFilter(admin.SimpleListFilter):
    title = "pending / sent"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("pending", "Pending"), ("sent", "Sent")]

    def queryset(self, request, queryset):
        if self.value() in ("pending", "sent"):
            return queryset.filter(published_at__isnull=self.value() == "pending")
        return queryset


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    list_display = [
        "id", "message_name", "routing_key", "handler", "event_id", "created_at", "published_at",
        "attempts", "error",
    ]
    list_filter = [PendingFilter, "message_name"]
    search_fields = ["=event_id"]
    ordering = ["-id"]
    show_full_result_count = False

    def scope(self, queryset, shelter_ids):
        events = StoredEvent.objects.filter(shelter_streams(shelter_ids)).values("event_id")
        return queryset.filter(event_id__in=events)

    @admin.display(description="last error")
    def error(self, message: OutboxMessage) -> str:
        return Truncator(message.last_error).chars(80)

    def backlog(self, request) -> Backlog:
        """Return the pending messages this user may see, and the oldest one's creation time."""
        pending = self.get_queryset(request).filter(published_at__isnull=True)
        stats = pending.aggregate(count=Count("id"), oldest=Min("created_at"))
        return Backlog(pending=stats["count"], oldest_pending_at=stats["oldest"])

    def changelist_view(self, request, extra_context=None):
        backlog = self.backlog(request)
        extra = {"backlog": backlog, "oldest_pending_age": age(backlog.oldest_age_seconds)}
        return super().changelist_view(request, {**(extra_context or {}), **extra})


def age(seconds: float) -> str:
    """Say how long something has waited, to the second: '42 s', '3 min 5 s', '2 h 7 min'."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
