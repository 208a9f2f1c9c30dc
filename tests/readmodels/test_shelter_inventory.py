"""GET /api/queries/shelter-inventory: the inventory step's counts, per shelter."""

import pytest

from adoptions import aftercare
from tests.conftest import client_for, error_code

pytestmark = pytest.mark.django_db

PATH = "/api/queries/shelter-inventory"


@pytest.fixture
def counted(shelter, other_shelter):
    """As the inventory step leaves them: three registered here, one adopted; two there."""
    aftercare.inventory_apply(shelter_id=shelter.id, available=3)
    aftercare.inventory_apply(shelter_id=shelter.id, available=-1, adopted=1)
    aftercare.inventory_apply(shelter_id=other_shelter.id, available=2)


def counts(body) -> list[tuple]:
    return [(s["shelterName"], s["available"], s["adopted"], s["returned"]) for s in body["shelters"]]


def test_staff_see_their_shelters_inventory(staff_client, shelter, counted):
    body = staff_client.get(PATH).json()

    assert counts(body) == [(shelter.name, 2, 1, 0)]
    assert body["shelters"][0]["shelterId"] == str(shelter.id) and body["shelters"][0]["updatedAt"]


def test_admins_see_every_shelter_by_name(admin_user, shelter, other_shelter, counted):
    body = client_for(admin_user).get(PATH).json()

    assert counts(body) == sorted([(shelter.name, 2, 1, 0), (other_shelter.name, 2, 0, 0)])


def test_customers_are_refused(customer_client, counted):
    response = customer_client.get(PATH)

    assert response.status_code == 403 and error_code(response) == "forbidden"
