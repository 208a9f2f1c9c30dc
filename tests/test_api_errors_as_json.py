"""Whoever answers a request under /api/, an error comes back as JSON with a machine-readable code.

Found by probing every route with bad input: the OpenAPI views rendered their errors as HTML
or YAML, a plain view took any method, a JSON body could name one field twice (one value
dropped without a word), a charset that is no text encoding and an age past the column's
range were 500s, and with DEBUG on a bug answered with Django's HTML debug page.
"""

import json
import uuid

import pytest
from django.urls import path

from petstore import urls as petstore_urls

pytestmark = pytest.mark.django_db


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return response.json()["error"]


@pytest.mark.parametrize(
    ("method", "address", "headers", "status", "code"),
    [
        ("options", "/api/docs/", {}, 405, "method_not_allowed"),
        ("delete", "/api/docs/", {}, 405, "method_not_allowed"),
        ("get", "/api/docs/", {"HTTP_ACCEPT": "application/json"}, 406, "not_acceptable"),
        ("get", "/api/docs/?format=json", {}, 404, "not_found"),
        ("post", "/api/schema/", {}, 405, "method_not_allowed"),
        ("get", "/api/schema/?format=xml", {}, 404, "not_found"),
        ("put", "/api/asyncapi/", {}, 405, "method_not_allowed"),
        ("post", "/api/commands/adopt-pet/", {}, 404, "not_found"),  # a wrong address, not a CSRF failure
        ("delete", "/api/nothing/here", {}, 404, "not_found"),
    ],
)
def test_errors_of_every_kind_of_view_under_the_api_are_json(client, method, address, headers, status, code):
    response = getattr(client, method)(address, **headers)

    assert error_of(response, status)["code"] == code
    if status == 405:
        assert response["Allow"]  # what the client may use instead


def test_the_pages_themselves_keep_their_type(client):
    assert client.get("/api/docs/")["Content-Type"].startswith("text/html")
    assert client.get("/api/asyncapi/")["Content-Type"].startswith("text/html")
    assert "openapi" in client.get("/api/schema/")["Content-Type"]


def test_a_body_naming_one_field_twice_is_refused_and_changes_nothing(staff_client, pet):
    from events.models import StoredEvent

    before = StoredEvent.objects.count()
    for body in (
        f'{{"petId": "{pet.id}", "pet_id": "{uuid.uuid4()}", "newName": "Zed"}}',
        f'{{"petId": "{pet.id}", "newName": "Zed", "newName": "Other"}}',
    ):
        response = staff_client.post("/api/commands/rename-pet", body, content_type="application/json")
        error = error_of(response, 400)
        assert error["code"] == "duplicate_field" and "name the same field" in error["message"]
    assert StoredEvent.objects.count() == before


def test_a_charset_that_is_no_text_encoding_is_unsupported_not_a_crash(staff_client):
    for charset in ("rot13", "base64", "zlib"):
        response = staff_client.post(
            "/api/commands/rename-pet", b"{}", content_type=f"application/json; charset={charset}"
        )
        assert error_of(response, 415)["code"] == "unsupported_media_type"


def test_a_max_age_past_the_columns_range_is_a_validation_error(client):
    response = client.get("/api/queries/available-pets", {"maxAge": 2**63})

    assert error_of(response, 400)["code"] == "validation_error"


def broken_view(request):
    raise RuntimeError("a bug")


@pytest.fixture
def broken_route(settings):
    settings.ROOT_URLCONF = "tests.test_api_errors_as_json"


urlpatterns = [path("api/broken", broken_view), *petstore_urls.urlpatterns]


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_under_the_api_answers_json_even_with_debug_on(client, broken_route, settings, debug, caplog):
    settings.DEBUG = debug
    client.raise_request_exception = False

    response = client.get("/api/broken")

    assert error_of(response, 500)["code"] == "internal_error"
    assert "a bug" not in response.content.decode()  # the traceback is logged, not shown
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)
    assert json.loads(response.content)  # a body a client can parse


def test_staff_of_another_shelter_learn_nothing_about_customers_from_an_adoption(other_staff, pet, customer):
    from django.contrib.auth import get_user_model

    from tests.conftest import client_for

    theirs = client_for(other_staff)
    nobody = client_for(get_user_model().objects.create_user("nobody", password="x-1234567"))
    for client, customer_id in ((theirs, customer.id), (theirs, uuid.uuid4()), (nobody, uuid.uuid4())):
        response = client.post(
            "/api/adoptions", {"petId": str(pet.id), "customerId": str(customer_id)}, format="json"
        )
        # The same answer whether or not the customer exists: their pet's shelter is not theirs.
        assert error_of(response, 403)["code"] == "not_shelter_staff"


def test_an_id_given_as_a_number_is_not_a_uuid(staff_client, pet):
    """DRF's UUIDField would read 123 as 00000000-…-00000000007b."""
    response = staff_client.post("/api/commands/rename-pet", {"petId": 123, "newName": "Zed"}, format="json")

    error = error_of(response, 400)
    assert error["code"] == "validation_error" and "petId" in error["details"]["fields"]
