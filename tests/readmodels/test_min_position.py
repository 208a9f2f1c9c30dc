"""Read-your-writes: a query given minPosition says why it cannot answer yet."""

import time

import pytest
from django.db import transaction

from events.models import StoredEvent
from tests.conftest import error_code
from tests.factories import register_pet

# Transactional: projections read only committed events (the test's own transaction is not).
pytestmark = pytest.mark.django_db(transaction=True)


def test_min_position_a_stopped_projection_cannot_reach_is_a_503_projection_failed(
    api_client, listing_stopped_on_bad, settings
):
    settings.PROJECTION_WAIT_SECONDS = 0.2

    response = api_client.get("/api/queries/available-pets", {"minPosition": listing_stopped_on_bad.position})

    assert response.status_code == 503 and error_code(response) == "projection_failed"
    error = response.json()["error"]
    assert error["message"] == "available_pets stopped on an event; staff have been told."
    assert error["details"] == {"minPosition": listing_stopped_on_bad.position}
    assert response["Retry-After"] == "1"


def test_min_position_a_stopped_projection_cannot_reach_is_answered_without_waiting(
    api_client, listing_stopped_on_bad, settings
):
    """It will not move until staff fix it: no client holds a web worker for the whole wait."""
    settings.PROJECTION_WAIT_SECONDS = 30

    started = time.monotonic()
    response = api_client.get("/api/queries/available-pets", {"minPosition": listing_stopped_on_bad.position})

    assert response.status_code == 503 and error_code(response) == "projection_failed"
    assert time.monotonic() - started < 10


def test_min_position_below_where_a_projection_stopped_still_answers(
    api_client, listing_stopped_on_bad, settings
):
    """Only a wait on the failing event fails: what it applied before is served."""
    settings.PROJECTION_WAIT_SECONDS = 0.2
    before = StoredEvent.objects.filter(position__lt=listing_stopped_on_bad.position).latest("position")

    response = api_client.get("/api/queries/available-pets", {"minPosition": before.position})

    assert response.status_code == 200
    assert [pet["name"] for pet in response.json()["results"]] == ["Good"]


def test_min_position_in_a_gap_left_by_a_rolled_back_command_is_a_400_unknown_position(
    require_postgres, api_client, shelter
):
    """PostgreSQL's sequence keeps the number a rolled-back append took: no event ever has it."""
    register_pet(shelter=shelter, name="Kept")
    with pytest.raises(RuntimeError), transaction.atomic():
        register_pet(shelter=shelter, name="Rolled back")
        raise RuntimeError("the command failed after appending")
    register_pet(shelter=shelter, name="Also kept")
    kept = list(StoredEvent.objects.order_by("position").values_list("position", flat=True))
    gaps = sorted(set(range(kept[0], kept[-1])) - set(kept))
    assert gaps

    response = api_client.get("/api/queries/available-pets", {"minPosition": gaps[0]})

    assert response.status_code == 400 and error_code(response) == "unknown_position"
    assert response.json()["error"]["message"] == f"No event has position {gaps[0]}."
