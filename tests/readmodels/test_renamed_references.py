"""Names the read models copy from plain tables follow a rename made in the staff console."""

import pytest
from django.forms.models import model_to_dict
from django.urls import reverse

from adoptions.models import Customer, Shelter
from readmodels.models import AdoptionHistoryEntry, PetListing, ShelterDashboard
from readmodels.projections import available_pets
from readmodels.projector import rebuild, state_of
from tests.factories import adopt_pet, register_pet
from tests.readmodels.conftest import project

# Transactional: projections read only committed events.
pytestmark = pytest.mark.django_db(transaction=True)


def change_in_console(admin_client, instance, **changes) -> None:
    """POST the object's change form as the console shows it, with `changes` made."""
    form = {k: v for k, v in model_to_dict(instance).items() if v is not None}
    form.update(changes)
    meta = instance._meta
    response = admin_client.post(
        reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[instance.pk]), form
    )
    assert response.status_code == 302, response.content.decode()[:2000]


def live(model, projection: str, *fields: str) -> list[tuple]:
    return sorted(model.objects.filter(generation=state_of(projection).generation).values_list(*fields))


def test_a_shelter_renamed_in_the_console_is_renamed_in_listings_and_dashboard(
    admin_client, shelter, customer
):
    adopted = register_pet(shelter=shelter, name="Gone")
    register_pet(shelter=shelter, name="Still here")
    adopt_pet(pet=adopted, customer=customer)
    project()

    change_in_console(admin_client, shelter, name="Riverside Rescue")

    assert Shelter.objects.get(pk=shelter.pk).name == "Riverside Rescue"
    assert {name for (name,) in live(PetListing, "available_pets", "shelter_name")} == {"Riverside Rescue"}
    assert live(ShelterDashboard, "shelter_dashboard", "shelter_name") == [("Riverside Rescue",)]
    listing = admin_client.get("/api/queries/available-pets").json()["results"]
    assert [pet["shelterName"] for pet in listing] == ["Riverside Rescue"]


def test_after_a_shelter_rename_a_rebuild_equals_the_incremental_model(admin_client, shelter, customer):
    register_pet(shelter=shelter, name="One")
    project()
    change_in_console(admin_client, shelter, name="Hillside Shelter")
    register_pet(shelter=shelter, name="Two")  # listed after the rename, from the new name
    project()
    fields = ("pet_id", "name", "shelter_id", "shelter_name", "available", "available_since")
    incremental = live(PetListing, "available_pets", *fields)

    rebuild(available_pets)

    assert live(PetListing, "available_pets", *fields) == incremental
    assert {row[3] for row in incremental} == {"Hillside Shelter"}


def test_a_customer_renamed_in_the_console_is_renamed_in_adoption_history(admin_client, shelter, customer):
    adopt_pet(pet=register_pet(shelter=shelter), customer=customer)
    project()

    change_in_console(admin_client, customer, full_name="Dana Q. Adopter")

    assert Customer.objects.get(pk=customer.pk).full_name == "Dana Q. Adopter"
    names = live(AdoptionHistoryEntry, "adoption_history", "customer_name")
    assert names == [("Dana Q. Adopter",)]
