"""The AsyncAPI document is valid AsyncAPI 3.0 and contains the guide's contract."""

import json
from io import StringIO
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.conf import settings
from django.core.management import call_command

from events.asyncapi import document

CONTRACTS = Path(settings.BASE_DIR).parent / "shared" / "contracts"


@pytest.fixture(scope="module")
def guide() -> dict:
    return yaml.safe_load((CONTRACTS / "guide-asyncapi.yaml").read_text())


def test_document_validates_against_the_official_asyncapi_3_schema():
    schema = json.loads((CONTRACTS / "asyncapi-3.0.0.schema.json").read_text())

    errors = list(jsonschema.Draft7Validator(schema).iter_errors(document()))

    assert errors == [], [e.message[:200] for e in errors]


def test_document_contains_the_guides_channels_with_the_same_addresses_and_messages(guide):
    ours = document()
    for channel_id, channel in guide["channels"].items():
        assert ours["channels"][channel_id]["address"] == channel["address"]
        assert ours["channels"][channel_id]["messages"] == channel["messages"]


def test_document_contains_the_guides_messages_field_for_field(guide):
    ours = document()["components"]["messages"]
    for name, message in guide["components"]["messages"].items():
        mine = ours[name]
        assert (mine["name"], mine["title"], mine["contentType"]) == (
            message["name"],
            message["title"],
            message["contentType"],
        )
        assert set(mine["payload"]["required"]) == set(message["payload"]["required"]), name
        for field, spec in message["payload"]["properties"].items():
            for keyword in ("type", "format", "enum", "minimum"):
                assert mine["payload"]["properties"][field].get(keyword) == spec.get(keyword), (name, field)


def test_document_contains_the_guides_operations_and_info(guide):
    ours = document()
    for operation_id, operation in guide["operations"].items():
        assert ours["operations"][operation_id]["action"] == operation["action"]
        assert ours["operations"][operation_id]["channel"] == operation["channel"]
    assert ours["info"]["title"] == guide["info"]["title"]
    assert ours["servers"]["production"]["protocol"] == "kafka"


def test_every_handler_is_a_receive_operation():
    operations = document()["operations"]
    summaries = " ".join(op["summary"] for op in operations.values() if op["action"] == "receive")
    assert "notifications.certificate" in summaries and "adoptions.vet_appointment" in summaries


def test_relayed_payloads_validate_against_their_published_schema(db, shelter, customer):
    from adoptions import services
    from events.context import CommandContext
    from events.models import OutboxMessage
    from tests.factories import register_pet

    pet = register_pet(shelter=shelter)
    services.pet_adopt(pet_id=pet.id, customer=customer, context=CommandContext.system())
    messages = document()["components"]["messages"]

    for row in OutboxMessage.objects.all():
        jsonschema.validate(
            row.payload, messages[row.message_name]["payload"], format_checker=jsonschema.FormatChecker()
        )


@pytest.mark.django_db
def test_document_is_served_as_yaml_json_and_a_page(client):
    as_yaml = client.get("/api/asyncapi.yaml")
    as_json = client.get("/api/asyncapi.json")
    page = client.get("/api/asyncapi/")

    assert yaml.safe_load(as_yaml.content) == as_json.json() == json.loads(json.dumps(document()))
    assert page.status_code == 200 and b"pet.adopted" in page.content and b"<script src=" not in page.content


def test_asyncapi_command_writes_the_document(tmp_path):
    out = tmp_path / "asyncapi.yaml"

    call_command("asyncapi", "--output", str(out), stdout=StringIO())

    assert yaml.safe_load(out.read_text())["asyncapi"] == "3.0.0"
