"""factory-boy factories for the things that are plain rows; pets go through the services."""

from __future__ import annotations

import uuid

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from adoptions import services
from adoptions.management.commands.seed_demo import staff_group
from adoptions.models import Customer, PetRecord, Shelter
from events.context import CommandContext
from events.models import StoredEvent


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pass-for-tests")


class ShelterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Shelter

    name = factory.Sequence(lambda n: f"Shelter {n}")
    contact_email = factory.Sequence(lambda n: f"shelter{n}@example.org")


class StaffFactory(UserFactory):
    is_staff = True

    @factory.post_generation
    def shelters(self, create, extracted, **kwargs):
        for shelter in extracted or []:
            shelter.staff.add(self)


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    user = factory.SubFactory(UserFactory)
    full_name = factory.Faker("name")
    email = factory.LazyAttribute(lambda c: c.user.email)


def register_pet(*, shelter: Shelter, name: str = "Buddy", species: str = "dog", age: int = 2) -> PetRecord:
    change = services.pet_register(
        shelter=shelter,
        name=name,
        species=species,
        age=age,
        context=CommandContext.system(causation_id="test"),
    )
    return PetRecord.objects.get(id=change.pet_id)


def registered_at_version_1(*, pet_id: uuid.UUID, shelter_id: uuid.UUID) -> StoredEvent:
    """A PetRegistered as schema version 1 stored it (no photo_url): a pet named Old, a cat of 9."""
    return StoredEvent.objects.create(
        stream_type="pet",
        stream_id=pet_id,
        stream_version=1,
        event_type="PetRegistered",
        schema_version=1,
        payload={"name": "Old", "species": "cat", "age": 9, "shelter_id": str(shelter_id)},
        recorded_at=timezone.now(),
    )


def adopt_pet(*, pet: PetRecord, customer: Customer) -> services.AdoptionStarted:
    return services.pet_adopt(
        pet_id=pet.id, customer=customer, context=CommandContext.system(causation_id="test")
    )


def shelter_staff_group() -> Group:
    """Return the group seed_demo gives shelter staff, with exactly its permissions."""
    return staff_group()
