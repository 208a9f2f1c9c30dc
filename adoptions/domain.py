"""The Pet aggregate and the domain errors its rules raise. No I/O here."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Self
from uuid import UUID

from events.aggregate import Aggregate
from events.catalogue import (
    DomainEvent,
    Message,
    PetAdopted,
    PetAvailable,
    PetNameChanged,
    PetRegistered,
    PetReturned,
    Species,
)


class DomainError(Exception):
    """A rule of the domain said no; `code` and `status` are what the API answers."""

    code = "domain_error"
    status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class PetNotFound(DomainError):
    code, status = "pet_not_found", 404

    def __init__(self, pet_id: UUID) -> None:
        super().__init__(f"Pet {pet_id} does not exist.", pet_id=str(pet_id))


class PetNotAvailable(DomainError):
    code, status = "pet_not_available", 409

    def __init__(self, pet_id: UUID, status: PetStatus) -> None:
        super().__init__(f"Pet {pet_id} is {status.value}, not available.", status=status.value)


class PetNotAdopted(DomainError):
    code, status = "pet_not_adopted", 409

    def __init__(self, pet_id: UUID) -> None:
        super().__init__(f"Pet {pet_id} is not adopted, so it cannot be returned.")


class PetStatus(enum.StrEnum):
    AVAILABLE = "available"
    ADOPTED = "adopted"


class Pet(Aggregate):
    stream_type = "pet"

    def __init__(self, id: UUID) -> None:
        super().__init__(id)
        self.name = ""
        self.species: Species | None = None
        self.age = 0
        self.shelter_id: UUID | None = None
        self.photo_url: str | None = None
        self.status: PetStatus | None = None
        self.adopted_by: UUID | None = None
        self.adoption_id: UUID | None = None

    # --- commands: check the rule, record the fact ---
    @classmethod
    def register(
        cls,
        *,
        pet_id: UUID,
        name: str,
        species: Species,
        age: int,
        shelter_id: UUID,
        photo_url: str | None = None,
    ) -> Self:
        pet = cls(pet_id)
        pet._record(
            PetRegistered(name=name, species=species, age=age, shelter_id=shelter_id, photo_url=photo_url)
        )
        return pet

    def adopt(self, *, adoption_id: UUID, customer_id: UUID) -> None:
        if self.status is not PetStatus.AVAILABLE:
            raise PetNotAvailable(self.id, self.status)
        self._record(PetAdopted(adoption_id=adoption_id, customer_id=customer_id, shelter_id=self.shelter_id))

    def return_to_shelter(self, *, reason: str) -> None:
        if self.status is not PetStatus.ADOPTED:
            raise PetNotAdopted(self.id)
        self._record(PetReturned(adoption_id=self.adoption_id, reason=reason))

    def rename(self, *, new_name: str) -> None:
        if new_name != self.name:
            self._record(PetNameChanged(old_name=self.name, new_name=new_name))

    # --- state changes: run on every replay ---
    def _apply_pet_registered(self, event: PetRegistered) -> None:
        self.name, self.species, self.age = event.name, event.species, event.age
        self.shelter_id, self.photo_url = event.shelter_id, event.photo_url
        self.status = PetStatus.AVAILABLE

    def _apply_pet_adopted(self, event: PetAdopted) -> None:
        self.status, self.adopted_by, self.adoption_id = (
            PetStatus.ADOPTED,
            event.customer_id,
            event.adoption_id,
        )

    def _apply_pet_returned(self, event: PetReturned) -> None:
        self.status, self.adopted_by, self.adoption_id = PetStatus.AVAILABLE, None, None

    def _apply_pet_name_changed(self, event: PetNameChanged) -> None:
        self.name = event.new_name

    def announce(self, message_type: type[Message], event: DomainEvent, at: datetime) -> Message:
        if message_type is PetAvailable:
            return PetAvailable(
                pet_id=self.id,
                species=self.species,
                age=self.age,
                name=self.name,
                shelter_id=self.shelter_id,
                timestamp=at,
            )
        return super().announce(message_type, event, at)

    # --- snapshots ---
    def snapshot_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "species": self.species.value if self.species else None,
            "age": self.age,
            "shelter_id": str(self.shelter_id) if self.shelter_id else None,
            "photo_url": self.photo_url,
            "status": self.status.value if self.status else None,
            "adopted_by": str(self.adopted_by) if self.adopted_by else None,
            "adoption_id": str(self.adoption_id) if self.adoption_id else None,
        }

    @classmethod
    def from_snapshot(cls, id: UUID, version: int, state: dict[str, Any]) -> Self:
        pet = cls(id)
        pet.version = version
        pet.name, pet.age, pet.photo_url = state["name"], state["age"], state["photo_url"]
        pet.species = Species(state["species"]) if state["species"] else None
        pet.status = PetStatus(state["status"]) if state["status"] else None
        for attr in ("shelter_id", "adopted_by", "adoption_id"):
            setattr(pet, attr, UUID(state[attr]) if state[attr] else None)
        return pet
