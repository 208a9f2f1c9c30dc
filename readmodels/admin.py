"""Projections in the staff console: position, lag and state, dead letters, resume."""

from django.contrib import admin, messages

from adoptions.admin_scoping import ReadOnlyAdminMixin

from . import projector
from .models import ProjectionDeadLetter, ProjectionState


@admin.register(ProjectionState)
class ProjectionStateAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Operators' view: superusers only (projections span every shelter)."""

    list_display = [
        "name",
        "status",
        "position",
        "lag_events",
        "lag_seconds",
        "generation",
        "error",
        "updated_at",
    ]
    actions = ["resume_selected"]

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    @admin.display(description="behind (events)")
    def lag_events(self, state):
        return self._lag(state).events

    @admin.display(description="lag (s)")
    def lag_seconds(self, state):
        return round(self._lag(state).seconds, 1)

    @staticmethod
    def _lag(state) -> projector.Lag:
        """Measured once per row, for both columns."""
        if not hasattr(state, "_lag"):
            state._lag = projector.lag(state.name, state=state)
        return state._lag

    @admin.action(description="Resume selected stopped projections")
    def resume_selected(self, request, queryset):
        for state in queryset.filter(status=ProjectionState.Status.FAILED):
            projector.resume(state.name)
        self.message_user(request, "Resumed; the projector retries their failing events.", messages.SUCCESS)

    def has_resume_permission(self, request):
        return request.user.is_superuser

    resume_selected.allowed_permissions = ("resume",)


@admin.register(ProjectionDeadLetter)
class ProjectionDeadLetterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["projection", "position", "event_type", "event_id", "error", "created_at"]
    list_filter = ["projection", "event_type"]

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser
