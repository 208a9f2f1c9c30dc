"""Answers the fuzzer (or probing around what it found) once got wrong, pinned one by one."""

import base64

import pytest

from notifications.certificates import certificate_generate
from tests.conftest import error_code
from tests.factories import adopt_pet

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_as_of_that_has_no_utc_moment_is_a_400_not_a_500(customer_client, pet, as_of):
    response = customer_client.get(f"/api/pets/{pet.id}", {"asOf": as_of})

    assert response.status_code == 400 and error_code(response) == "validation_error"


def test_as_of_with_any_offset_is_read_in_utc(customer_client, pet):
    # PostgreSQL refuses offsets past ±15:59: the moment goes to the database in UTC.
    response = customer_client.get(f"/api/pets/{pet.id}", {"asOf": "2100-01-01T12:00:00-16:46"})

    assert response.status_code == 200
    assert response.json()["asOf"] == "2100-01-02T04:46:00+00:00"


@pytest.mark.parametrize("position", ["notadate", "2026-13-45", "9" * 40, "0001-01-01 00:00:00+05:00"])
def test_a_tampered_cursor_is_a_404_not_a_500(api_client, pet, position):
    cursor = base64.b64encode(f"p={position}".encode()).decode()

    response = api_client.get("/api/queries/available-pets", {"cursor": cursor})

    assert response.status_code == 404 and error_code(response) == "not_found"


@pytest.mark.parametrize(
    ("query", "status"), [("since=2000-01-01&until=0001-01-01", 400), ("until=0001-01-02", 200)]
)
def test_stats_until_the_first_day_there_is_is_not_a_500(staff_client, query, status):
    # The default `since` (29 days before `until`) would fall before the first date there is.
    response = staff_client.get(f"/api/queries/adoption-stats?{query}")

    assert response.status_code == status


def test_certificate_is_served_to_a_client_that_accepts_only_pdf(
    customer_client, customer, pet, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    adoption = adopt_pet(pet=pet, customer=customer).adoption
    certificate_generate(adoption=adoption)

    response = customer_client.get(f"/api/adoptions/{adoption.id}/certificate", HTTP_ACCEPT="application/pdf")

    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"


def test_certificate_errors_stay_json_whatever_the_client_accepts(customer_client, customer, pet):
    adoption = adopt_pet(pet=pet, customer=customer).adoption

    response = customer_client.get(f"/api/adoptions/{adoption.id}/certificate", HTTP_ACCEPT="application/pdf")

    assert response.status_code == 404 and error_code(response) == "certificate_not_ready"


def test_asyncapi_yaml_is_served_to_a_client_that_accepts_only_yaml(api_client):
    response = api_client.get("/api/asyncapi.yaml", HTTP_ACCEPT="application/yaml")

    assert response.status_code == 200 and response["Content-Type"].startswith("application/yaml")


def test_adoption_without_completion_or_return_shows_nulls_as_documented(customer_client, customer, pet):
    adoption = adopt_pet(pet=pet, customer=customer).adoption

    body = customer_client.get(f"/api/adoptions/{adoption.id}").json()

    assert body["completedAt"] is None and body["returnedAt"] is None
    assert {step["finishedAt"] for step in body["steps"]} == {None}
