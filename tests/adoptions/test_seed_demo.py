"""seed_demo gives the same demo data, ids and tokens every time it runs."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from adoptions.models import Customer, PetRecord, Shelter
from events.models import StoredEvent

pytestmark = pytest.mark.django_db


def seed() -> dict:
    out = StringIO()
    call_command("seed_demo", "--json", stdout=out)
    return json.loads(out.getvalue())


def test_seed_demo_twice_gives_identical_output_and_no_duplicates():
    first, second = seed(), seed()

    assert first == second
    assert Shelter.objects.count() == 2 and Customer.objects.count() == 2
    assert PetRecord.objects.count() == 10
    assert StoredEvent.objects.filter(event_type="PetRegistered").count() == 10


def test_seed_demo_json_has_working_logins(client):
    data = seed()

    assert {p["species"] for p in data["pets"]} == {"dog", "cat", "bird", "rabbit"}
    assert len(data["shelters"]) == 2 and all(s["staff"]["token"] for s in data["shelters"])
    staff = data["shelters"][0]["staff"]
    assert client.login(username=staff["username"], password=staff["password"])
    customer = data["customers"][0]
    response = client.get(
        f"/api/pets/{data['pets'][0]['id']}", HTTP_AUTHORIZATION=f"Token {customer['token']}"
    )
    assert response.status_code == 200 and response.json()["name"] == data["pets"][0]["name"]
