"""The staff console's site: a login throttled per username and address, and the system's
health (outbox backlog, projection lag) at a glance on the index page."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from rest_framework.throttling import BaseThrottle

from events.models import OutboxMessage
from readmodels import projector

from .login_throttle import login_failed, login_locked, login_succeeded

#: A backlog or a projection this far behind is shown as a warning on the index.
WARN_AFTER_SECONDS = 60


class ThrottledLoginForm(AdminAuthenticationForm):
    """The admin login form; a username locked out from this address is not even checked."""

    throttled = False

    def clean(self):
        username = self.cleaned_data.get("username")
        if not username:  # the field's own error says so; nothing was tried
            return super().clean()
        # The client's address as the API's throttles see it: behind NUM_PROXIES proxies, the
        # one the nearest proxy appended (REMOTE_ADDR there is the proxy, shared by everyone).
        who = {"username": username, "address": BaseThrottle().get_ident(self.request)}
        if login_locked(**who):
            self.throttled = True
            raise ValidationError(
                "Too many failed logins for this username from your address. "
                "Try again in %(minutes)d minutes.",
                code="throttled",
                params={"minutes": settings.ADMIN_LOGIN_LOCKOUT_SECONDS // 60},
            )
        try:
            cleaned = super().clean()
        except ValidationError:  # a wrong password, or an account that may not use the console
            login_failed(**who)
            raise
        login_succeeded(**who)
        return cleaned


@dataclass(frozen=True)
class ProjectionLag:
    name: str
    status: str
    events: int
    seconds: float

    @property
    def warn(self) -> bool:
        return self.status != "running" or self.seconds > WARN_AFTER_SECONDS


def projection_lags() -> list[ProjectionLag]:
    """Return how far each projection trails the event log."""
    lags = []
    for name in sorted(projector.PROJECTIONS):
        state = projector.state_of(name)
        lag = projector.lag(name, state=state)
        lags.append(ProjectionLag(name, state.status, lag.events, lag.seconds))
    return lags


class StaffConsoleSite(admin.AdminSite):
    site_header = "PetStore staff console"
    site_title = "PetStore staff console"
    index_title = "Shelter work"
    login_form = ThrottledLoginForm
    index_template = "admin/console_index.html"

    def login(self, request, extra_context=None):
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        if getattr(form, "throttled", False):
            response.status_code = 429
        return response

    def index(self, request, extra_context=None):
        return super().index(request, {**self.health(request), **(extra_context or {})})

    def health(self, request) -> dict:
        """The outbox backlog the user may see and each projection's lag, for the index."""
        from events.admin import age  # not at import: events.admin registers on this site

        context = {"projection_lags": projection_lags()}
        outbox_admin = self._registry.get(OutboxMessage)
        if outbox_admin and outbox_admin.has_view_permission(request):
            backlog = outbox_admin.backlog(request)  # scoped like its list: everything for admins
            context["backlog"] = backlog
            context["backlog_age"] = age(backlog.oldest_age_seconds)
            context["backlog_warn"] = backlog.oldest_age_seconds > WARN_AFTER_SECONDS
        return context
