"""The staff console's site: a throttled login, and the system's health on the index page."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from events.models import OutboxMessage, StoredEvent
from readmodels import projector
from readmodels.models import ProjectionState
from tests.factories import register_pet
from tests.readmodels.conftest import project
from tests.support.threads import wait_until

pytestmark = pytest.mark.django_db

PASSWORD = "pass-for-tests"  # tests.factories.UserFactory's


@pytest.fixture
def staff(staff, staff_group):
    staff.groups.add(staff_group)
    return staff


def log_in(client: Client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(
        reverse("admin:login"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail(client: Client, username: str, times: int, address: str = "10.0.0.1") -> None:
    for _ in range(times):
        assert log_in(client, username, "wrong", address).status_code == 200


# --- login throttling ------------------------------------------------------------------------


def test_after_five_failures_even_the_right_password_is_refused_with_429(client, staff, settings):
    assert settings.ADMIN_LOGIN_MAX_FAILURES == 5
    fail(client, staff.username, 5)

    response = log_in(client, staff.username, PASSWORD)

    assert response.status_code == 429
    assert "Too many failed logins for this username from your address" in response.content.decode()
    assert not logged_in(client)


def test_the_lockout_holds_one_username_at_one_address(client, staff, other_staff):
    fail(client, staff.username, 5, address="10.0.0.1")

    other_user = log_in(Client(), other_staff.username, PASSWORD, address="10.0.0.1")
    other_address = Client()
    elsewhere = log_in(other_address, staff.username.upper(), PASSWORD, address="10.0.0.2")
    same_pair = log_in(Client(), staff.username.upper(), PASSWORD, address="10.0.0.1")

    assert other_user.status_code == 302
    assert elsewhere.status_code == 200  # usernames are case-sensitive: no such user…
    assert log_in(other_address, staff.username, PASSWORD, address="10.0.0.2").status_code == 302
    assert same_pair.status_code == 429  # …but the count ignores case, so no way around it


def test_a_successful_login_clears_the_count(client, staff):
    fail(client, staff.username, 4)
    assert log_in(client, staff.username, PASSWORD).status_code == 302
    client.logout()

    fail(client, staff.username, 4)

    assert log_in(client, staff.username, PASSWORD).status_code == 302


def test_the_lock_lifts_when_its_window_ends(client, staff, settings):
    settings.ADMIN_LOGIN_LOCKOUT_SECONDS = 5  # room for the six requests below on a busy machine
    fail(client, staff.username, 5)
    assert log_in(client, staff.username, PASSWORD).status_code == 429

    # Tries while locked are refused without being counted, so asking again and again is fair.
    wait_until(
        lambda: log_in(client, staff.username, PASSWORD).status_code == 302,
        timeout=30,
        what="the login lock to lift",
    )
    assert logged_in(client)


def test_a_customer_with_the_right_password_is_refused_and_counted(client, customer):
    username = customer.user.username

    refusals = [log_in(client, username, PASSWORD) for _ in range(5)]

    assert {r.status_code for r in refusals} == {200}
    assert "staff account" in refusals[0].content.decode()
    assert log_in(client, username, PASSWORD).status_code == 429
    assert not logged_in(client)


def test_the_login_form_is_csrf_protected(staff):
    client = Client(enforce_csrf_checks=True)

    response = log_in(client, staff.username, PASSWORD)

    assert response.status_code == 403 and not logged_in(client)


# --- the index: outbox backlog and projection lag -------------------------------------------


def health(response) -> str:
    html = response.content.decode()
    start = html.index('id="console-health"')
    return html[start : html.index("</table>", start)]


@pytest.mark.django_db(transaction=True)  # the projector reads only committed events
def test_index_shows_the_outbox_backlog_and_each_projections_lag(admin_client, shelter, other_shelter):
    # given two pets registered (2 events, 4 outbox messages) and one message already sent
    register_pet(shelter=shelter)
    register_pet(shelter=other_shelter, name="Rex")
    OutboxMessage.objects.filter(pk=OutboxMessage.objects.first().pk).update(published_at="2026-01-01T00:00Z")

    before = health(admin_client.get(reverse("admin:index")))
    project()  # every projection catches up (waiting out any transaction open on the server)
    after = health(admin_client.get(reverse("admin:index")))

    assert "Outbox backlog</a></th>\n      <td>3 pending, the oldest waiting" in before
    assert before.count('class="projection-lag') == len(projector.PROJECTIONS) == 3
    assert '">Projection available_pets</a></th>' in before
    assert "running: 2 events behind" in before
    assert after.count("running: 0 events behind, lag 0.0 s") == 3
    assert StoredEvent.objects.count() == 2


def test_staff_see_the_backlog_of_their_own_shelters_only(client, staff, shelter, other_shelter):
    register_pet(shelter=shelter)
    register_pet(shelter=other_shelter, name="Rex")
    register_pet(shelter=other_shelter, name="Pip")
    client.force_login(staff)

    page = health(client.get(reverse("admin:index")))

    assert "<td>2 pending, the oldest waiting" in page  # PetRegistered and PetAvailable of one pet
    assert "Projection available_pets</th>" in page  # named, not linked: operators' page


def test_staff_without_the_outbox_permission_see_no_backlog(client, shelter):
    from tests.factories import StaffFactory

    user = StaffFactory(shelters=[shelter])  # no group, no permissions
    client.force_login(user)

    page = health(client.get(reverse("admin:index")))

    assert "Outbox backlog" not in page
    assert "Projection adoption_history" in page


def test_a_stopped_projection_is_flagged(admin_client):
    projector.state_of("shelter_dashboard")
    ProjectionState.objects.filter(name="shelter_dashboard").update(status="failed", error="boom")

    page = health(admin_client.get(reverse("admin:index")))

    assert '<tr class="projection-lag health-warn">' in page
    assert "failed: 0 events behind" in page
    assert page.count("health-warn") == 1
