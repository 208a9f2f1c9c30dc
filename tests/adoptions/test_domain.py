"""The Pet aggregate's rules, without a database."""

import uuid

import pytest

from adoptions.domain import Pet, PetNotAdopted, PetNotAvailable, PetStatus
from events.catalogue import PetAdopted, PetNameChanged, PetRegistered, PetReturned, Species


def registered_pet() -> Pet:
    pet = Pet.register(pet_id=uuid.uuid4(), name="Buddy", species=Species.DOG, age=2, shelter_id=uuid.uuid4())
    pet.mark_saved()
    return pet


def test_registering_records_pet_registered_and_makes_the_pet_available():
    pet = Pet.register(pet_id=uuid.uuid4(), name="Buddy", species=Species.DOG, age=2, shelter_id=uuid.uuid4())

    assert [type(e) for e in pet.pending_events] == [PetRegistered]
    assert pet.status is PetStatus.AVAILABLE
    assert pet.version == 1


def test_available_pet_can_be_adopted_once():
    pet = registered_pet()
    customer_id, adoption_id = uuid.uuid4(), uuid.uuid4()

    pet.adopt(adoption_id=adoption_id, customer_id=customer_id)

    assert pet.status is PetStatus.ADOPTED and pet.adopted_by == customer_id
    assert isinstance(pet.pending_events[0], PetAdopted)
    with pytest.raises(PetNotAvailable):
        pet.adopt(adoption_id=uuid.uuid4(), customer_id=uuid.uuid4())


def test_only_an_adopted_pet_can_be_returned():
    pet = registered_pet()
    with pytest.raises(PetNotAdopted):
        pet.return_to_shelter(reason="allergies")

    pet.adopt(adoption_id=uuid.uuid4(), customer_id=uuid.uuid4())
    pet.return_to_shelter(reason="allergies")

    assert pet.status is PetStatus.AVAILABLE and pet.adopted_by is None
    assert isinstance(pet.pending_events[-1], PetReturned)


def test_rename_to_the_same_name_records_nothing():
    pet = registered_pet()

    pet.rename(new_name="Buddy")
    assert pet.pending_events == []

    pet.rename(new_name="Sir Buddy")
    assert pet.pending_events == [PetNameChanged(old_name="Buddy", new_name="Sir Buddy")]


def test_replaying_the_guides_history_rebuilds_buddy():
    """The guide's Buddy: registered, adopted, returned for allergies, adopted again."""
    pet_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    history = [
        PetRegistered(name="Buddy", species="dog", age=2, shelter_id=uuid.uuid4()),
        PetAdopted(adoption_id=uuid.uuid4(), customer_id=first),
        PetReturned(reason="allergies"),
        PetAdopted(adoption_id=uuid.uuid4(), customer_id=second),
    ]
    pet = Pet(pet_id)
    for event in history:
        pet.apply(event)

    assert (pet.status, pet.adopted_by, pet.version) == (PetStatus.ADOPTED, second, 4)


def test_snapshot_round_trip_keeps_state():
    pet = registered_pet()
    pet.adopt(adoption_id=uuid.uuid4(), customer_id=uuid.uuid4())

    restored = Pet.from_snapshot(pet.id, pet.version, pet.snapshot_state())

    assert restored.snapshot_state() == pet.snapshot_state()
    assert restored.version == pet.version
