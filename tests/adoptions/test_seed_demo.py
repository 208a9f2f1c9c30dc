"""seed_demo gives the same demo data, ids and tokens every time it runs."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

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


def test_seed_demo_json_has_exactly_the_documented_shape():
    data = seed()

    assert set(data) == {"admin", "shelters", "customers", "pets"}
    assert set(data["admin"]) == {"username", "password", "token"}
    for shelter in data["shelters"]:
        assert set(shelter) == {"id", "name", "staff"}
        assert set(shelter["staff"]) == {"username", "password", "token"}
    assert len(data["customers"]) == 2
    for customer in data["customers"]:
        assert set(customer) == {"id", "email", "username", "password", "token"}
    assert len(data["pets"]) == 10
    shelter_ids = {shelter["id"] for shelter in data["shelters"]}
    for pet in data["pets"]:
        assert set(pet) == {"id", "name", "species", "age", "shelterId"}
        assert pet["shelterId"] in shelter_ids


def test_seed_demo_refuses_where_demo_data_is_not_allowed(settings):
    settings.DEMO_DATA_ALLOWED = False  # as production settings say

    with pytest.raises(CommandError, match="not on a production database"):
        seed()

    assert not Shelter.objects.exists()
