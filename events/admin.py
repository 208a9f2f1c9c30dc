"""The staff console's view of the event log, the outbox and the handlers' deliveries.

All read-only and scoped by shelter; the one action is redriving dead deliveries.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, Min
from django.urls import reverse
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.timezone import localtime

from adoptions.admin_scoping import ReadOnlyAdminMixin, ShelterScopedAdmin
from adoptions.permissions import may_redrive, shelter_event_ids, shelter_streams

from .delivery import redrive
from .handlers import handlers_for
from .models import Delivery, OutboxMessage, StoredEvent
from .outbox import Backlog

STREAM_PAGES = {
    "pet": "admin:adoptions_petrecord_change",
    "adoption": "admin:adoptions_adoption_change",
}


EVENT_FIELDS = [
    "position",
    "event_id",
    "event_type",
    "schema_version",
    "stream_type",
    "stream_id",
    "stream_version",
    "recorded_at",
    "payload",
    "metadata",
]
DELIVERY_ROW = (
    '<tr class="delivery-{}"><td>{}</td><td>{}</td><td>{}</td><td title="{}">{}</td><td>{}</td></tr>'
)


@admin.register(StoredEvent)
class StoredEventAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    """The append-only log: no add, change or delete, whoever asks."""

    list_display = [
        "position",
        "event_type",
        "stream_type",
        "stream",
        "stream_version",
        "recorded_at",
    ]
    list_filter = ["event_type", "stream_type"]
    search_fields = ["stream_id"]
    ordering = ["-position"]
    show_full_result_count = False  # the log grows without bound; skip the second COUNT(*)
    readonly_fields = [*EVENT_FIELDS, "deliveries"]
    fieldsets = [(None, {"fields": EVENT_FIELDS}), ("Handlers", {"fields": ["deliveries"]})]

    def scope(self, queryset, shelter_ids):
        return queryset.filter(shelter_streams(shelter_ids))

    @admin.display(description="deliveries")
    def deliveries(self, event: StoredEvent):
        """Every handler this event fanned out to, with its delivery's outcome."""
        by_handler = {d.handler: d for d in Delivery.objects.filter(event_id=event.event_id)}
        waiting = [name for name in subscribed_handlers(event) if name not in by_handler]
        rows = [delivery_row(d) for d in sorted(by_handler.values(), key=lambda d: d.handler)]
        rows += [("not-started", name, "no delivery yet", 0, "", "—", "—") for name in waiting]
        if not rows:
            return "No handler subscribes to this event."
        return format_html(
            '<table class="event-deliveries"><thead><tr><th>Handler</th><th>Status</th>'
            "<th>Attempts</th><th>Last error</th><th>Finished at</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            format_html_join("\n", DELIVERY_ROW, rows),
        )

    @admin.display(description="stream", ordering="stream_id")
    def stream(self, event: StoredEvent):
        page = STREAM_PAGES.get(event.stream_type)
        if page is None:
            return str(event.stream_id)
        url = reverse(page, args=[event.stream_id])
        return format_html('<a href="{}">{}</a>', url, event.stream_id)


def subscribed_handlers(event: StoredEvent) -> list[str]:
    """Handlers of every message the event published (its own name and any announcements)."""
    published = OutboxMessage.objects.filter(event_id=event.event_id, handler="")
    names = set(published.values_list("message_name", flat=True)) or {event.event_type}
    return sorted({handler.name for name in names for handler in handlers_for(name)})


def delivery_row(delivery: Delivery) -> tuple:
    url = reverse("admin:events_delivery_change", args=[delivery.pk])
    return (
        delivery.status,
        format_html('<a href="{}">{}</a>', url, delivery.handler),
        delivery.status,
        delivery.attempts,
        delivery.last_error,
        Truncator(delivery.last_error).chars(200) or "—",
        localize(localtime(delivery.finished_at)) if delivery.finished_at else "—",
    )


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
        "id",
        "message_name",
        "routing_key",
        "handler",
        "event_id",
        "created_at",
        "published_at",
        "attempts",
        "error",
    ]
    list_filter = [PendingFilter, "message_name"]
    search_fields = ["=event_id"]
    ordering = ["-id"]
    show_full_result_count = False

    def scope(self, queryset, shelter_ids):
        return queryset.filter(event_id__in=shelter_event_ids(shelter_ids))

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


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    """Each handler's run of each event; the dead ones wait here for a person to redrive them.

    Read-only like the rest of the log; redriving needs events.change_delivery, which staff
    have (seed_demo), but no form ever edits a delivery.
    """

    list_display = [
        "handler",
        "event_type",
        "event_id",
        "status",
        "attempts",
        "error",
        "finished_at",
        "next_attempt_at",
    ]
    list_filter = ["status", "handler"]
    search_fields = ["=event_id"]
    actions = ["redrive_dead"]
    show_full_result_count = False

    def scope(self, queryset, shelter_ids):
        return queryset.filter(event_id__in=shelter_event_ids(shelter_ids))

    def changelist_view(self, request, extra_context=None):
        title = {"title": "Deliveries (dead letters)"}
        return super().changelist_view(request, {**(extra_context or {}), **title})

    @admin.display(description="last error")
    def error(self, delivery: Delivery) -> str:
        return Truncator(delivery.last_error).chars(80)

    def has_redrive_permission(self, request) -> bool:
        return may_redrive(request.user)

    @admin.action(description="Redrive selected dead deliveries", permissions=["redrive"])
    def redrive_dead(self, request, queryset):
        dead = queryset.filter(status=Delivery.Status.DEAD)
        count = sum(redrive(handler=d.handler, event_id=d.event_id) for d in dead)
        skipped = queryset.count() - count
        note = f" ({skipped} not dead, left alone)" if skipped else ""
        self.message_user(
            request,
            f"Redrove {count} dead deliver{'y' if count == 1 else 'ies'}{note}.",
            messages.SUCCESS if count else messages.WARNING,
        )


def age(seconds: float) -> str:
    """Say how long something has waited, to the second: '42 s', '3 min 5 s', '2 h 7 min'."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
