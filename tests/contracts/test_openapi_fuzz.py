"""Fuzz the API from its own OpenAPI document (schemathesis, through WSGI, in this process).

For every documented operation, as shelter staff, as a customer, with an unknown token and with
none: no 5xx, and every answer is in the document (status code, content type, headers, body).
Generated ids are swapped for seeded ones half the time, so the fuzzer reaches real pets,
adoptions and certificates, not only 404s.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import hypothesis
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adoptions import services
from events.context import CommandContext
from notifications.certificates import certificate_generate
from tests.conftest import IN_CI
from tests.factories import CustomerFactory, ShelterFactory, StaffFactory, adopt_pet, register_pet
from tests.readmodels.conftest import project

# Committed data: the projections read only committed events, so the read models have rows.
pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


CI_SEED = 20261128


def fuzz_seed() -> dict:
    """The same inputs on every CI build; elsewhere new ones each run (PETSTORE_FUZZ_SEED replays)."""
    seed = os.environ.get("PETSTORE_FUZZ_SEED") or (CI_SEED if IN_CI else None)
    return {"seed": int(seed)} if seed else {}


CONFIG = schemathesis.Config.from_dict(
    {
        **fuzz_seed(),
        # Every generated request, valid and invalid; the coverage phase adds the boundary values
        # of every parameter and the methods each path does not allow.
        "generation": {"mode": "all", "with-security-parameters": False},
        "phases": {"coverage": {"enabled": True}, "stateful": {"enabled": False}},
    }
)


# Loaded when the module is collected (schemathesis' lazy from_fixture does not run on pytest 9.2):
# the document comes from the app's own /api/schema/, generated without the database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), config=CONFIG)


@dataclass
class World:
    """Seeded data: known ids by parameter name, and a token per role."""

    known: dict[str, list[str]]
    tokens: dict[str, str]


@pytest.fixture
def world(settings, tmp_path) -> World:
    settings.MEDIA_ROOT = tmp_path  # certificates
    settings.PROJECTION_WAIT_SECONDS = 0.2  # minPosition ahead of the read model: 503 quickly
    shelter = ShelterFactory()
    staff = StaffFactory(shelters=[shelter])
    customer = CustomerFactory()
    available = register_pet(shelter=shelter, name="Rex")
    adopted = register_pet(shelter=shelter, name="Mia", species="cat")
    adoption = adopt_pet(pet=adopted, customer=customer).adoption
    certificate_generate(adoption=adoption)
    returned = register_pet(shelter=shelter, name="Bo", species="rabbit", age=7)
    returned_adoption = adopt_pet(pet=returned, customer=customer).adoption
    services.pet_return(pet_id=returned.id, reason="allergies", context=CommandContext.system())
    project()
    pets = [str(available.id), str(adopted.id), str(returned.id)]
    adoptions = [str(adoption.id), str(returned_adoption.id)]
    return World(
        known={
            "pet_id": pets,
            "petId": pets,
            "adoption_id": adoptions,
            "shelterId": [str(shelter.id)],
            "customerId": [str(customer.id)],
        },
        tokens={
            "staff": Token.objects.create(user=staff).key,
            "customer": Token.objects.create(user=customer.user).key,
        },
    )


def credentials(caller: str, world: World) -> dict[str, str]:
    """The Authorization header of each kind of caller."""
    if caller == "no token":
        return {}
    key = world.tokens.get(caller, "0" * 40)
    return {"Authorization": f"Token {key}"}


def use_known_ids(case, world: World) -> None:
    """Swap generated ids for seeded ones, each with even odds, decided by the case itself.

    (Not by drawing from Hypothesis: schemathesis skips its coverage phase for tests that draw.)
    """
    for container in (case.path_parameters, case.query, case.body):
        if not isinstance(container, dict):
            continue
        for name in sorted(container.keys() & world.known.keys()):
            dice = zlib.crc32(f"{name}={container[name]!r}".encode())
            if dice % 2:
                known = world.known[name]
                container[name] = known[(dice // 2) % len(known)]


def fuzz_as(caller: str):
    """Build one test that runs every operation as this caller."""

    @schema.parametrize()
    @hypothesis.settings(
        max_examples=25,  # per operation, besides the coverage phase's boundary cases
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    def test(case, world):
        use_known_ids(case, world)

        case.call_and_validate(headers=credentials(caller, world), checks=CHECKS)

    return test


test_as_shelter_staff = fuzz_as("staff")
test_as_a_customer = fuzz_as("customer")
test_with_an_unknown_token = fuzz_as("unknown token")
test_with_no_token = fuzz_as("no token")
