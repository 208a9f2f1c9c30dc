"""Operators see projections in the admin; shelter staff do not."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from events.models import StoredEvent
from readmodels.models import PetListing
from readmodels.projector import state_of
from tests.readmodels.conftest import project

CHANGELIST = "/admin/readmodels/projectionstate/"

pytestmark = pytest.mark.django_db


def test_superuser_sees_projection_positions_and_states(client):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")
    state_of("available_pets")
    client.force_login(admin)

    page = client.get("/admin/readmodels/projectionstate/")

    assert page.status_code == 200 and b"available_pets" in page.content


def test_staff_cannot_open_projections(client, staff):
    client.force_login(staff)
    assert client.get("/admin/readmodels/projectionstate/").status_code == 403


@pytest.fixture
def superuser_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests"))
    return client


def changelist_row(page, name: str) -> dict[str, str]:
    """The list's cells for one projection, by column (status, position, error, …)."""
    html = page.content.decode()
    start = html.index(f'name="_selected_action" value="{name}"')
    row = html[start : html.index("</tr>", start)]
    return dict(re.findall(r'<td class="field-(\w+)[^"]*">(.*?)</td>', row))


def readonly_field(page, label: str) -> str:
    html = page.content.decode()
    found = re.search(rf"<label>{label}:</label>\s*<div class=\"readonly\">(.*?)</div>", html)
    assert found, f"no {label} on the page"
    return found[1]


@pytest.mark.django_db(transaction=True)
def test_a_stopped_projection_shows_its_error_and_where_it_stopped_in_the_list(
    superuser_client, listing_stopped_on_bad
):
    page = superuser_client.get(CHANGELIST)

    row = changelist_row(page, "available_pets")
    checkpoint = StoredEvent.objects.filter(position__lt=listing_stopped_on_bad.position).latest("position")
    assert row["status"] == "Failed"
    assert row["error"] == listing_stopped_on_bad.error  # names the event's position: "… at #N: …"
    assert row["position"] == str(checkpoint.position)
    assert changelist_row(page, "shelter_dashboard")["status"] == "Running"


@pytest.mark.django_db(transaction=True)
def test_a_stopped_projections_page_shows_its_error_and_the_position_it_failed_at(
    superuser_client, listing_stopped_on_bad
):
    page = superuser_client.get(reverse("admin:readmodels_projectionstate_change", args=["available_pets"]))

    assert page.status_code == 200
    assert readonly_field(page, "Error") == listing_stopped_on_bad.error
    assert readonly_field(page, "Error position") == str(listing_stopped_on_bad.position)


@pytest.mark.django_db(transaction=True)
def test_the_resume_action_lets_a_stopped_projection_apply_its_failing_event_again(
    superuser_client, listing_stopped_on_bad
):
    listing_stopped_on_bad.fix()

    response = superuser_client.post(
        CHANGELIST, {"action": "resume_selected", "_selected_action": ["available_pets"]}, follow=True
    )

    assert b"Resumed; the projector retries their failing events." in response.content
    state = state_of("available_pets")
    assert (state.status, state.error, state.error_position) == ("running", "", None)
    project()
    listed = PetListing.objects.filter(generation=state.generation).values_list("name", flat=True)
    assert sorted(listed) == ["Bad", "Good"]
