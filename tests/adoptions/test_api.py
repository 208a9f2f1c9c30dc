"""The command and query endpoints: happy paths, permissions and every kind of bad input."""

import uuid

import pytest

from adoptions.models import Adoption, PetRecord
from events.models import OutboxMessage, StoredEvent
from tests.conftest import client_for, error_code
from tests.factories import registered_at_version_1

pytestmark = pytest.mark.django_db


# ---------------------------------------------------------------- register


def test_staff_registers_a_pet_and_gets_its_id_version_and_position(staff_client, shelter):
    response = staff_client.post(
        "/api/commands/register-pet",
        {"name": "Nova", "species": "dog", "age": 3, "shelterId": str(shelter.id)},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["version"] == 1 and body["position"] > 0
    assert response["X-Event-Position"] == str(body["position"])
    assert PetRecord.objects.get(id=body["petId"]).name == "Nova"


def test_staff_of_another_shelter_cannot_register_there(staff_client, other_shelter):
    response = staff_client.post(
        "/api/commands/register-pet",
        {"name": "Nova", "species": "dog", "age": 3, "shelterId": str(other_shelter.id)},
        format="json",
    )

    assert response.status_code == 403 and error_code(response) == "not_shelter_staff"
    assert not StoredEvent.objects.exists()


def test_customer_cannot_register_pets(customer_client, shelter):
    response = customer_client.post(
        "/api/commands/register-pet",
        {"name": "Nova", "species": "dog", "age": 3, "shelterId": str(shelter.id)},
        format="json",
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "N", "species": "lizard", "age": 1}, "species"),
        ({"name": "N", "species": "dog", "age": -1}, "age"),
        ({"species": "dog", "age": 1}, "name"),
        ({"name": "N", "species": "dog", "age": "old"}, "age"),
        ({"name": "N", "species": "dog", "age": 1, "colour": "red"}, "colour"),
    ],
)
def test_invalid_registration_is_a_400_naming_the_field_and_writes_nothing(
    staff_client, shelter, body, field
):
    response = staff_client.post(
        "/api/commands/register-pet", {**body, "shelterId": str(shelter.id)}, format="json"
    )

    assert response.status_code == 400 and error_code(response) == "validation_error"
    assert field in response.json()["error"]["details"]["fields"]
    assert not StoredEvent.objects.exists() and not OutboxMessage.objects.exists()


def test_unknown_shelter_is_a_404(staff_client):
    response = staff_client.post(
        "/api/commands/register-pet",
        {"name": "N", "species": "dog", "age": 1, "shelterId": str(uuid.uuid4())},
        format="json",
    )
    assert response.status_code == 404 and error_code(response) == "shelter_not_found"


# ---------------------------------------------------------------- adopt


def test_customer_adopts_and_gets_202_processing_with_location(customer_client, customer, pet):
    response = customer_client.post("/api/adoptions", {"petId": str(pet.id)}, format="json")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "processing" and body["petId"] == str(pet.id)
    assert response["Location"] == f"/api/adoptions/{body['adoptionId']}"
    adoption = Adoption.objects.get(id=body["adoptionId"])
    assert adoption.customer == customer and adoption.shelter_id == pet.shelter_id
    adopted = OutboxMessage.objects.get(routing_key="pet.adopted")
    assert adopted.payload["adoptionId"] == body["adoptionId"]


def test_adopt_pet_command_is_the_same_handler(customer_client, customer, pet):
    response = customer_client.post(
        "/api/commands/adopt-pet", {"petId": str(pet.id), "customerId": str(customer.id)}, format="json"
    )
    assert response.status_code == 202 and response.json()["status"] == "processing"


def test_second_adoption_of_same_pet_gets_409(customer_client, other_customer, pet):
    assert customer_client.post("/api/adoptions", {"petId": str(pet.id)}, format="json").status_code == 202

    response = client_for(other_customer.user).post("/api/adoptions", {"petId": str(pet.id)}, format="json")

    assert response.status_code == 409 and error_code(response) == "pet_not_available"
    assert Adoption.objects.count() == 1


def test_customer_cannot_adopt_for_someone_else(customer_client, other_customer, pet):
    response = customer_client.post(
        "/api/adoptions", {"petId": str(pet.id), "customerId": str(other_customer.id)}, format="json"
    )
    assert response.status_code == 403
    assert not Adoption.objects.exists()


def test_staff_adopts_for_a_customer_only_in_their_shelter(staff_client, other_staff, customer, pet):
    denied = client_for(other_staff).post(
        "/api/adoptions", {"petId": str(pet.id), "customerId": str(customer.id)}, format="json"
    )
    allowed = staff_client.post(
        "/api/adoptions", {"petId": str(pet.id), "customerId": str(customer.id)}, format="json"
    )

    assert denied.status_code == 403
    assert allowed.status_code == 202


def test_wrong_shelter_id_is_a_409(customer_client, pet, other_shelter):
    response = customer_client.post(
        "/api/adoptions", {"petId": str(pet.id), "shelterId": str(other_shelter.id)}, format="json"
    )
    assert response.status_code == 409 and error_code(response) == "shelter_mismatch"


def test_unknown_pet_is_a_404(customer_client):
    response = customer_client.post("/api/adoptions", {"petId": str(uuid.uuid4())}, format="json")
    assert response.status_code == 404 and error_code(response) == "pet_not_found"


def test_non_uuid_pet_id_is_a_400(customer_client):
    response = customer_client.post("/api/adoptions", {"petId": "buddy"}, format="json")
    assert response.status_code == 400 and "petId" in response.json()["error"]["details"]["fields"]


def test_stale_expected_version_is_409_with_both_versions(customer_client, pet):
    response = customer_client.post(
        "/api/adoptions", {"petId": str(pet.id), "expectedVersion": 7}, format="json"
    )

    assert response.status_code == 409 and error_code(response) == "version_conflict"
    assert response.json()["error"]["details"] == {"expectedVersion": 7, "actualVersion": 1}


# ---------------------------------------------------------------- malformed requests


def test_malformed_json_is_a_400(customer_client):
    response = customer_client.post("/api/adoptions", "{bad", content_type="application/json")
    assert response.status_code == 400 and error_code(response) == "malformed_json"


def test_json_nested_too_deeply_is_a_400_on_every_command(customer_client):
    body = "[" * 5000 + "]" * 5000  # well under the size limit
    for path in (
        "/api/adoptions",
        "/api/commands/adopt-pet",
        "/api/commands/register-pet",
        "/api/commands/return-pet",
        "/api/commands/rename-pet",
    ):
        response = customer_client.post(path, body, content_type="application/json")
        assert response.status_code == 400 and error_code(response) == "malformed_json", path


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ("null", {"nonFieldErrors": ["No data provided"]}),
        ("[]", {"nonFieldErrors": ["Invalid data. Expected a dictionary, but got list."]}),
    ],
)
def test_a_body_that_is_no_object_is_a_400_about_the_whole_body(customer_client, body, fields):
    for path in ("/api/adoptions", "/api/commands/register-pet", "/api/commands/rename-pet"):
        response = customer_client.post(path, body, content_type="application/json")

        assert response.status_code == 400 and error_code(response) == "validation_error", path
        assert response.json()["error"]["details"]["fields"] == fields, path


def test_an_adoptions_id_is_no_pet(customer_client, customer, pet):
    """An adoption's stream (its AdoptionCompleted) shares the log with the pets' streams."""
    from events.catalogue import AdoptionCompleted
    from events.context import CommandContext
    from events.store import append

    adoption_id = uuid.uuid4()
    append(
        stream_type="adoption",
        stream_id=adoption_id,
        expected_version=0,
        events=[AdoptionCompleted(certificate_url="https://example.org/c.pdf", vet_appointment_date=None)],
        metadata=CommandContext.system().as_metadata(),
    )

    for path in (f"/api/pets/{adoption_id}", f"/api/pets/{adoption_id}/events"):
        response = customer_client.get(path)
        assert response.status_code == 404 and error_code(response) == "pet_not_found", path
    response = customer_client.post("/api/adoptions", {"petId": str(adoption_id)}, format="json")
    assert response.status_code == 404 and error_code(response) == "pet_not_found"
    assert not Adoption.objects.exists()


def test_wrong_content_type_is_a_415(customer_client):
    response = customer_client.post("/api/adoptions", "petId=x", content_type="text/plain")
    assert response.status_code == 415 and error_code(response) == "unsupported_media_type"


def test_oversized_body_is_a_413_and_nothing_is_written(customer_client, pet, settings):
    huge = {"petId": str(pet.id), "padding": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    response = customer_client.post("/api/adoptions", huge, format="json")
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    assert not Adoption.objects.exists()


def test_json_array_body_is_a_400(customer_client):
    response = customer_client.post("/api/adoptions", [1, 2], format="json")
    assert response.status_code == 400 and error_code(response) == "validation_error"


def test_anonymous_request_is_a_401(api_client, pet):
    response = api_client.post("/api/adoptions", {"petId": str(pet.id)}, format="json")
    assert response.status_code == 401 and error_code(response) == "not_authenticated"


def test_bad_token_is_a_401(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token nope")
    response = api_client.get(f"/api/pets/{uuid.uuid4()}")
    assert response.status_code == 401 and error_code(response) == "authentication_failed"


def test_unknown_api_path_and_non_uuid_ids_are_json_404s(customer_client):
    for path in ("/api/nothing-here", "/api/pets/not-a-uuid", "/api/adoptions/42"):
        response = customer_client.get(path)
        assert response.status_code == 404 and error_code(response) == "not_found", path


def test_wrong_method_is_a_405(customer_client):
    response = customer_client.get("/api/commands/adopt-pet")
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"


# ---------------------------------------------------------------- return and rename


def adopt(client, pet):
    return client.post("/api/adoptions", {"petId": str(pet.id)}, format="json").json()


def test_staff_records_a_return_and_the_pet_is_available_again(staff_client, customer_client, pet):
    adoption = adopt(customer_client, pet)

    response = staff_client.post(
        "/api/commands/return-pet", {"petId": str(pet.id), "reason": "allergies"}, format="json"
    )

    assert response.status_code == 200 and response.json()["version"] == 3
    assert PetRecord.objects.get(id=pet.id).status == "available"
    assert Adoption.objects.get(id=adoption["adoptionId"]).status == "returned"
    assert OutboxMessage.objects.filter(routing_key="pet.available").count() == 2


def test_returning_an_available_pet_is_a_409(staff_client, pet):
    response = staff_client.post(
        "/api/commands/return-pet", {"petId": str(pet.id), "reason": "x"}, format="json"
    )
    assert response.status_code == 409 and error_code(response) == "pet_not_adopted"


def test_rename_with_expected_version(staff_client, pet):
    ok = staff_client.post(
        "/api/commands/rename-pet",
        {"petId": str(pet.id), "newName": "Rex", "expectedVersion": 1},
        format="json",
    )
    stale = staff_client.post(
        "/api/commands/rename-pet",
        {"petId": str(pet.id), "newName": "Max", "expectedVersion": 1},
        format="json",
    )

    assert ok.status_code == 200 and ok.json()["version"] == 2
    assert stale.status_code == 409 and stale.json()["error"]["details"]["actualVersion"] == 2


def test_customer_cannot_rename(customer_client, pet):
    response = customer_client.post(
        "/api/commands/rename-pet", {"petId": str(pet.id), "newName": "Rex"}, format="json"
    )
    assert response.status_code == 403


# ---------------------------------------------------------------- reads


def test_pet_detail_and_time_travel(customer_client, staff_client, pet):
    registered = customer_client.get(f"/api/pets/{pet.id}").json()
    moment = StoredEvent.objects.get(stream_id=pet.id).recorded_at.isoformat()
    adopt(customer_client, pet)

    now = customer_client.get(f"/api/pets/{pet.id}").json()
    then = customer_client.get(f"/api/pets/{pet.id}", {"asOf": moment}).json()

    assert registered["status"] == "available" and registered["version"] == 1
    assert now["status"] == "adopted" and now["version"] == 2
    assert then["status"] == "available" and then["version"] == 1


def test_as_of_before_the_pet_existed_is_404_and_garbage_is_400(customer_client, pet):
    assert customer_client.get(f"/api/pets/{pet.id}", {"asOf": "2000-01-01T00:00:00Z"}).status_code == 404
    response = customer_client.get(f"/api/pets/{pet.id}", {"asOf": "yesterday"})
    assert response.status_code == 400 and error_code(response) == "validation_error"


def test_pet_history_lists_every_event_in_order_for_staff(staff_client, customer_client, pet):
    adopt(customer_client, pet)

    history = staff_client.get(f"/api/pets/{pet.id}/events").json()

    assert [e["type"] for e in history] == ["PetRegistered", "PetAdopted"]
    assert [e["version"] for e in history] == [1, 2]
    assert history[0]["data"]["name"] == pet.name
    assert customer_client.get(f"/api/pets/{pet.id}/events").status_code == 403


def test_pet_history_gives_an_old_event_upcast_with_the_version_its_data_is_in(staff_client, shelter):
    """A PetRegistered recorded at version 1 (before photos) reads as version 2, and says so."""
    pet_id = uuid.uuid4()
    now = registered_at_version_1(pet_id=pet_id, shelter_id=shelter.id).recorded_at
    PetRecord.objects.create(
        id=pet_id, shelter=shelter, name="Old", species="cat", age=9, status="available", version=1,
        registered_at=now, updated_at=now,
    )  # fmt: skip

    [registered] = staff_client.get(f"/api/pets/{pet_id}/events").json()

    assert registered["storedSchemaVersion"] == 1
    assert registered["schemaVersion"] == 2 and registered["data"]["photoUrl"] is None


def test_adoption_is_visible_to_its_customer_and_shelter_staff_only(
    customer_client, staff_client, other_customer, other_staff, pet
):
    adoption_id = adopt(customer_client, pet)["adoptionId"]
    url = f"/api/adoptions/{adoption_id}"

    assert customer_client.get(url).json()["adoptionId"] == adoption_id
    assert staff_client.get(url).status_code == 200
    for outsider in (other_customer.user, other_staff):
        response = client_for(outsider).get(url)
        assert response.status_code == 404 and error_code(response) == "adoption_not_found"


# ---------------------------------------------------------------- idempotency


def test_retry_with_the_same_idempotency_key_replays_the_answer(customer_client, pet):
    first = customer_client.post(
        "/api/adoptions", {"petId": str(pet.id)}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    retry = customer_client.post(
        "/api/adoptions", {"petId": str(pet.id)}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert first.status_code == retry.status_code == 202
    assert first.json() == retry.json()
    assert retry["Location"] == first["Location"] and retry["Idempotent-Replayed"] == "true"
    assert Adoption.objects.count() == 1
    assert StoredEvent.objects.filter(event_type="PetAdopted").count() == 1


def test_same_idempotency_key_with_another_body_is_a_422(customer_client, pet, shelter):
    from tests.factories import register_pet

    other_pet = register_pet(shelter=shelter, name="Other")
    customer_client.post("/api/adoptions", {"petId": str(pet.id)}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    response = customer_client.post(
        "/api/adoptions", {"petId": str(other_pet.id)}, format="json", HTTP_IDEMPOTENCY_KEY="k-2"
    )

    assert response.status_code == 422 and error_code(response) == "idempotency_key_reused"
    assert Adoption.objects.count() == 1


def test_a_commands_events_carry_its_correlation_and_causation(customer_client, pet, shelter):
    from tests.factories import register_pet

    customer_client.post(
        "/api/adoptions", {"petId": str(pet.id)}, format="json", HTTP_X_CORRELATION_ID="checkout-42"
    )
    keyed = register_pet(shelter=shelter)
    customer_client.post(
        "/api/adoptions", {"petId": str(keyed.id)}, format="json", HTTP_IDEMPOTENCY_KEY="retry-me-7"
    )

    adopted = StoredEvent.objects.filter(event_type="PetAdopted").order_by("position")
    first, second = (event.metadata for event in adopted)
    assert first["correlation_id"] == "checkout-42"
    assert str(uuid.UUID(first["causation_id"])) == first["causation_id"]  # a command id of its own
    assert second["causation_id"] == "retry-me-7"
    assert uuid.UUID(second["correlation_id"])  # none sent: a new one


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/commands/register-pet",
            lambda pet, shelter: {"name": "Twin", "species": "cat", "age": 2, "shelterId": str(shelter.id)},
        ),
        ("/api/commands/rename-pet", lambda pet, shelter: {"petId": str(pet.id), "newName": "Renamed"}),
        ("/api/commands/return-pet", lambda pet, shelter: {"petId": str(pet.id), "reason": "allergies"}),
    ],
)
def test_every_staff_command_records_once_under_one_idempotency_key(
    staff_client, customer_client, pet, shelter, path, body
):
    if path.endswith("return-pet"):
        adopt(customer_client, pet)
    events_before = StoredEvent.objects.count()

    first = staff_client.post(path, body(pet, shelter), format="json", HTTP_IDEMPOTENCY_KEY="staff-k-1")
    retry = staff_client.post(path, body(pet, shelter), format="json", HTTP_IDEMPOTENCY_KEY="staff-k-1")

    assert 200 <= first.status_code < 300 and retry.status_code == first.status_code
    assert retry.json() == first.json() and retry["Idempotent-Replayed"] == "true"
    assert StoredEvent.objects.count() == events_before + 1  # recorded once
