"""GET /api/queries/adoption-stats: the analytics step's counts, per shelter, day and species."""

from datetime import date, timedelta

import pytest
from django.utils import timezone

from adoptions.models import AdoptionStats
from tests.conftest import client_for, error_code

pytestmark = pytest.mark.django_db

PATH = "/api/queries/adoption-stats"


@pytest.fixture
def counted(shelter, other_shelter):
    today = timezone.localdate()
    rows = [
        (shelter, today, "dog", 3),
        (shelter, today, "cat", 1),
        (shelter, today - timedelta(days=2), "dog", 2),
        (shelter, today - timedelta(days=40), "dog", 9),  # before the default span
        (other_shelter, today, "dog", 5),
    ]
    for where, day, species, adoptions in rows:
        AdoptionStats.objects.create(shelter=where, day=day, species=species, adoptions=adoptions)
    return today


def test_staff_see_their_shelters_last_thirty_days_oldest_first(staff_client, shelter, counted):
    body = staff_client.get(PATH).json()

    assert (body["since"], body["until"]) == (str(counted - timedelta(days=29)), str(counted))
    assert [(d["day"], d["species"], d["adoptions"]) for d in body["days"]] == [
        (str(counted - timedelta(days=2)), "dog", 2),
        (str(counted), "cat", 1),
        (str(counted), "dog", 3),
    ]
    assert {(d["shelterId"], d["shelterName"]) for d in body["days"]} == {(str(shelter.id), shelter.name)}
    assert body["total"] == 6


def test_a_span_and_a_species_narrow_the_answer(staff_client, counted):
    since = counted - timedelta(days=60)
    body = staff_client.get(PATH, {"since": str(since), "until": str(counted), "species": "dog"}).json()

    assert [d["adoptions"] for d in body["days"]] == [9, 2, 3]
    assert body["total"] == 14


def test_admins_see_every_shelter_and_may_pick_one(admin_user, other_shelter, counted):
    admin = client_for(admin_user)
    assert admin.get(PATH).json()["total"] == 11
    only = admin.get(PATH, {"shelterId": str(other_shelter.id)}).json()
    assert [(d["shelterId"], d["adoptions"]) for d in only["days"]] == [(str(other_shelter.id), 5)]


def test_customers_and_other_shelters_staff_are_refused(
    customer_client, staff_client, other_shelter, counted
):
    response = customer_client.get(PATH)
    assert response.status_code == 403 and error_code(response) == "forbidden"
    response = staff_client.get(PATH, {"shelterId": str(other_shelter.id)})
    assert response.status_code == 403 and error_code(response) == "not_shelter_staff"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"species": "dragon"}, "species"),
        ({"since": "2026-03-14", "until": "2026-03-13"}, "since"),
        ({"since": "2025-01-01", "until": "2026-01-02"}, "since"),  # 367 days: 366 is the most
        ({"until": "yesterday"}, "until"),
        ({"shelterId": "not-a-uuid"}, "shelterId"),
    ],
)
def test_bad_parameters_are_400s(staff_client, params, field):
    response = staff_client.get(PATH, params)
    assert response.status_code == 400 and error_code(response) == "validation_error"
    assert field in response.json()["error"]["details"]["fields"]


def test_the_longest_span_is_a_year_and_a_day(staff_client):
    until = date(2026, 3, 13)
    response = staff_client.get(PATH, {"since": str(until - timedelta(days=365)), "until": str(until)})
    assert response.status_code == 200
