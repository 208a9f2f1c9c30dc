"""Every API endpoint against every role: each sees and changes only what is theirs.

The world: shelter 1 has an adopted pet (adopted by `customer`, with its certificate) and an
available one; `shelter_staff` works at shelter 1, `other_staff` at shelter 2. Someone
else's adoption is a 404 (as if it did not exist); an action a role may not take is a 403.
Each (endpoint, role) case gets a fresh world, so commands never see each other's effects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from notifications.certificates import certificate_generate
from tests.conftest import client_for
from tests.factories import UserFactory, adopt_pet, register_pet
from tests.readmodels.conftest import project

pytestmark = pytest.mark.django_db

ROLES = (
    "anonymous",
    "invalid_token",
    "customer",
    "other_customer",
    "shelter_staff",
    "other_staff",
    "superuser",
)
Expected = tuple[int, str | None]  # status, and the JSON error code for an error


def _for(**by_role: Expected) -> dict[str, Expected]:
    """Complete an expectation with the two roles nobody lets in."""
    unauthenticated = {
        "anonymous": (401, "not_authenticated"),
        "invalid_token": (401, "authentication_failed"),
    }
    return {**unauthenticated, **by_role}


def staff_only(ok: int, refused: str = "not_shelter_staff") -> dict[str, Expected]:
    """Staff of the pet's shelter and superusers may; customers and other shelters' staff may not."""
    no = (403, refused)
    return _for(
        customer=no, other_customer=no, shelter_staff=(ok, None), other_staff=no, superuser=(ok, None)
    )


def adopter_or_staff(not_found: str) -> dict[str, Expected]:
    """The adopting customer, the shelter's staff and superusers see it; to others it does not exist."""
    hidden, ok = (404, not_found), (200, None)
    return _for(customer=ok, other_customer=hidden, shelter_staff=ok, other_staff=hidden, superuser=ok)


def any_staff() -> dict[str, Expected]:
    """Any shelter's staff and superusers (each sees their own shelters); customers may not."""
    no, ok = (403, "forbidden"), (200, None)
    return _for(customer=no, other_customer=no, shelter_staff=ok, other_staff=ok, superuser=ok)


def everyone(status: int = 200, *, invalid_token: Expected = (401, "authentication_failed")) -> dict:
    return {role: (status, None) for role in ROLES} | {"invalid_token": invalid_token}


def signed_in(status: int, code: str | None = None) -> dict[str, Expected]:
    return _for(**{role: (status, code) for role in ROLES[2:]})


@dataclass(frozen=True)
class Case:
    route: str  # the URL name in petstore/urls.py
    method: str
    expected: dict[str, Expected]
    url_kwargs: Callable[[SimpleNamespace], dict] = lambda world: {}
    body: Callable[[SimpleNamespace], dict] | None = None
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.method} {self.route}{f' ({self.label})' if self.label else ''}"


def pet_kwargs(world) -> dict:
    return {"pet_id": world.adopted_pet.id}


def adoption_kwargs(world) -> dict:
    return {"adoption_id": world.adoption.id}


CASES = [
    Case(
        "register-pet",
        "post",
        staff_only(201),
        body=lambda w: {"name": "Nova", "species": "cat", "age": 1, "shelterId": str(w.shelter.id)},
    ),
    Case(
        "adopt-pet",
        "post",
        _for(
            customer=(202, None),
            other_customer=(403, "forbidden"),  # adopting in someone else's name
            shelter_staff=(202, None),
            other_staff=(403, "not_shelter_staff"),
            superuser=(202, None),
        ),
        body=lambda w: {"petId": str(w.available_pet.id), "customerId": str(w.customer.id)},
        label="for customer",
    ),
    Case(
        "adopt-pet",
        "post",
        _for(
            customer=(202, None),
            other_customer=(202, None),
            shelter_staff=(400, "validation_error"),  # staff must say for whom
            other_staff=(403, "not_shelter_staff"),  # the pet's shelter is checked first
            superuser=(400, "validation_error"),
        ),
        body=lambda w: {"petId": str(w.available_pet.id)},
        label="for oneself",
    ),
    Case(
        "adoption-create",
        "post",
        _for(
            customer=(202, None),
            other_customer=(403, "forbidden"),
            shelter_staff=(202, None),
            other_staff=(403, "not_shelter_staff"),
            superuser=(202, None),
        ),
        body=lambda w: {"petId": str(w.available_pet.id), "customerId": str(w.customer.id)},
    ),
    Case(
        "return-pet",
        "post",
        staff_only(200),
        body=lambda w: {"petId": str(w.adopted_pet.id), "reason": "Allergic to fur"},
    ),
    Case(
        "rename-pet",
        "post",
        staff_only(200),
        body=lambda w: {"petId": str(w.available_pet.id), "newName": "Pixel"},
    ),
    Case("adoption-detail", "get", adopter_or_staff("adoption_not_found"), adoption_kwargs),
    Case(
        "adoption-detail",
        "get",
        signed_in(404, "adoption_not_found"),
        lambda w: {"adoption_id": uuid.uuid4()},
        label="unknown",
    ),
    Case("adoption-certificate", "get", adopter_or_staff("adoption_not_found"), adoption_kwargs),
    Case("pet-detail", "get", signed_in(200), pet_kwargs),
    Case(
        "pet-detail",
        "get",
        signed_in(404, "pet_not_found"),
        lambda w: {"pet_id": uuid.uuid4()},
        label="unknown",
    ),
    Case("pet-events", "get", staff_only(200, refused="forbidden"), pet_kwargs),
    Case("adoption-history", "get", staff_only(200, refused="forbidden"), pet_kwargs),
    # Each staff member sees their own shelters only: see the test below, and
    # tests/readmodels/test_adoption_stats.py.
    Case("shelter-dashboard", "get", any_staff()),
    Case("adoption-stats", "get", any_staff()),
    Case("shelter-inventory", "get", any_staff()),
    Case("api-root", "get", everyone()),
    Case("available-pets", "get", everyone()),
    Case("asyncapi-yaml", "get", everyone()),
    Case("asyncapi-json", "get", everyone()),
    Case("asyncapi-page", "get", everyone(invalid_token=(200, None))),  # a page: no API authentication
    # The OpenAPI contract is public and authenticates nobody, so a bad token changes nothing.
    Case("openapi-schema", "get", everyone(invalid_token=(200, None))),
    Case("openapi-docs", "get", everyone(invalid_token=(200, None))),
]


def api_route_names(patterns=None) -> set[str]:
    """The names of every route under /api/ (the catch-all 404 has none)."""
    names = set()
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            names |= api_route_names(pattern.url_patterns)
        elif isinstance(pattern, URLPattern) and pattern.name and str(pattern.pattern).startswith("api/"):
            names.add(pattern.name)
    return names


def test_every_api_endpoint_is_in_the_matrix():
    routes = api_route_names()
    assert len(routes) >= 15, "the /api/ routes were not found: has the URL layout changed?"
    missing = routes - {case.route for case in CASES}

    assert not missing, f"add rows for {sorted(missing)} to tests/test_permissions_matrix.py"


@pytest.fixture
def world(shelter, other_shelter, staff, other_staff, customer, other_customer, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    adopted_pet = register_pet(shelter=shelter, name="Rex")
    started = adopt_pet(pet=adopted_pet, customer=customer)
    certificate_generate(adoption=started.adoption)
    return SimpleNamespace(
        shelter=shelter,
        customer=customer,
        adopted_pet=adopted_pet,
        adoption=started.adoption,
        available_pet=register_pet(shelter=shelter, name="Luna"),
        users={
            "customer": customer.user,
            "other_customer": other_customer.user,
            "shelter_staff": staff,
            "other_staff": other_staff,
            "superuser": UserFactory(is_staff=True, is_superuser=True),
        },
    )


def client_as(role: str, world) -> APIClient:
    if role == "anonymous":
        return APIClient()
    if role == "invalid_token":
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {uuid.uuid4().hex}")
        return client
    return client_for(world.users[role])


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_role_gets_the_expected_answer(case, role, world):
    from django.urls import reverse

    url = reverse(case.route, kwargs=case.url_kwargs(world))
    body = case.body(world) if case.body else None

    response = getattr(client_as(role, world), case.method)(url, body, format="json" if body else None)

    expected_status, expected_code = case.expected[role]
    assert response.status_code == expected_status, response.content[:300]
    if expected_code is not None:
        assert response.json()["error"]["code"] == expected_code


# ------------------------------------------------------------ what the 200s contain


def test_only_the_adopter_and_the_shelter_see_who_adopted_a_pet(world):
    def adopted_by(role: str):
        body = client_as(role, world).get(f"/api/pets/{world.adopted_pet.id}").json()
        return body["adoptedBy"], body["adoptionId"]

    mine = (str(world.customer.id), str(world.adoption.id))
    assert adopted_by("customer") == adopted_by("shelter_staff") == adopted_by("superuser") == mine
    assert adopted_by("other_customer") == adopted_by("other_staff") == (None, None)


@pytest.mark.django_db(transaction=True)  # on PostgreSQL, projections read committed events only
def test_staff_dashboard_shows_only_their_own_shelters(world, other_shelter):
    register_pet(shelter=other_shelter, name="Kiwi")
    project()

    def shelters(role: str) -> set[str]:
        body = client_as(role, world).get("/api/queries/shelter-dashboard").json()
        return {row["shelterId"] for row in body["shelters"]}

    assert shelters("shelter_staff") == {str(world.shelter.id)}
    assert shelters("other_staff") == {str(other_shelter.id)}
    assert shelters("superuser") == {str(world.shelter.id), str(other_shelter.id)}


def test_certificate_is_the_pdf_for_those_who_may_see_it(world):
    response = client_as("customer", world).get(f"/api/adoptions/{world.adoption.id}/certificate")

    assert response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF")
