"""GET /api/ lists the entry points, and ids in paths are read in either case."""

from urllib.parse import urlsplit

import pytest
from django.urls import resolve, reverse

from petstore.api_root import ENTRY_POINTS, TEMPLATES

pytestmark = pytest.mark.django_db


def test_the_root_links_every_entry_point_absolutely(api_client):
    response = api_client.get("/api/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    sections = ("commands", "queries", "contracts")
    links = {name: url for section in sections for name, url in body[section].items()}
    assert set(links) == {name for _, name, _ in ENTRY_POINTS}
    for name, url in links.items():
        parts = urlsplit(url)
        assert parts.scheme == "http" and parts.netloc == "testserver", url
        url_name = next(url_name for _, entry, url_name in ENTRY_POINTS if entry == name)
        assert parts.path == reverse(url_name)


def test_the_root_templates_name_real_routes(api_client, pet):
    body = api_client.get("/api/").json()

    assert set(body["templates"]) == set(TEMPLATES)
    for name, template in body["templates"].items():
        path = urlsplit(template.replace("{?asOf}", "")).path  # before urlsplit reads "?" as the query
        path = path.replace("{petId}", str(pet.id)).replace("{adoptionId}", str(pet.id))
        assert resolve(path).url_name == ROUTE_OF_TEMPLATE[name]


ROUTE_OF_TEMPLATE = {
    "adoption": "adoption-detail",
    "adoptionCertificate": "adoption-certificate",
    "pet": "pet-detail",
    "petEvents": "pet-events",
    "adoptionHistory": "adoption-history",
}


def test_api_without_the_slash_redirects_to_the_root(api_client):
    response = api_client.get("/api")

    assert response.status_code == 301
    assert response["Location"] == "/api/"


def test_a_pet_id_in_upper_case_finds_the_pet(customer_client, pet):
    response = customer_client.get(f"/api/pets/{str(pet.id).upper()}")

    assert response.status_code == 200
    assert response.json()["petId"] == str(pet.id)


def test_an_adoption_id_in_upper_case_finds_the_adoption(customer_client, pet):
    started = customer_client.post("/api/adoptions", {"petId": str(pet.id)}, format="json").json()

    response = customer_client.get(f"/api/adoptions/{started['adoptionId'].upper()}")

    assert response.status_code == 200
    assert response.json()["adoptionId"] == started["adoptionId"]


def test_a_malformed_id_in_a_path_is_still_a_json_404(customer_client):
    response = customer_client.get("/api/pets/not-a-uuid")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_links_in_answers_stay_lower_case(pet):
    assert reverse("pet-detail", kwargs={"pet_id": str(pet.id).upper()}) == f"/api/pets/{pet.id}"
