"""Commands: each loads a pet, lets the aggregate decide, and saves its events with its other
writes, all or nothing (on PostgreSQL, one statement: events/store.py append)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from events import sql
from events.catalogue import AdoptionCompleted, Species
from events.context import CommandContext
from events.handlers import handlers_for
from events.models import StoredEvent
from events.store import AlsoWrite, ConcurrencyConflict, StreamNotFound, append, last_position

from . import pets
from .domain import DomainError, Pet, PetNotFound
from .models import Adoption, Customer, PetRecord, Shelter
from .selectors import adoption_details_by_id, adoption_locked_for_settling


class ShelterMismatch(DomainError):
    code, status = "shelter_mismatch", 409


@dataclass(frozen=True)
class PetChange:
    """What a command on a pet returns: its new version and the log position to wait for."""

    pet_id: UUID
    version: int
    position: int


def pet_load(pet_id: UUID) -> Pet:
    try:
        return pets.load(pet_id)
    except StreamNotFound:
        raise PetNotFound(pet_id) from None


def _record_synced(pet: Pet, changed_at) -> sql.Statement:
    """The pet's row in PetRecord brought up to its new state: every command on a pet writes it."""
    return sql.update_statement(
        PetRecord,
        pet.id,
        name=pet.name,
        age=pet.age,
        status=pet.status.value,
        version=pet.version,
        updated_at=changed_at,
    )


def _save(
    pet: Pet, *, context: CommandContext, expected_version: int | None, also_write: AlsoWrite | None = None
) -> list[StoredEvent]:
    """Append the pet's new events with its PetRecord row and `also_write`'s statements."""

    def writes(rows: list[StoredEvent]) -> list[sql.Statement]:
        return [_record_synced(pet, rows[-1].recorded_at), *(also_write(rows) if also_write else [])]

    return pets.save(
        pet, metadata=context.as_metadata(), expected_version=expected_version, also_write=writes
    )


def pet_register(
    *,
    shelter: Shelter,
    name: str,
    species: Species,
    age: int,
    photo_url: str | None = None,
    pet_id: UUID | None = None,
    context: CommandContext,
) -> PetChange:
    pet = Pet.register(
        pet_id=pet_id or uuid.uuid4(),
        name=name,
        species=species,
        age=age,
        shelter_id=shelter.id,
        photo_url=photo_url,
    )
    record = PetRecord(
        id=pet.id,
        shelter=shelter,
        name=pet.name,
        species=pet.species.value,
        age=pet.age,
        photo_url=pet.photo_url or "",
        status=pet.status.value,
        version=pet.version,
    )

    def record_created(rows: list[StoredEvent]) -> list[sql.Statement]:
        record.registered_at = record.updated_at = rows[-1].recorded_at
        return [sql.insert_statement(PetRecord, PetRecord._meta.concrete_fields, [record])]

    rows = pets.save(pet, metadata=context.as_metadata(), expected_version=0, also_write=record_created)
    sql.saved(record)
    return PetChange(pet.id, pet.version, rows[-1].position)


@dataclass(frozen=True)
class AdoptionStarted:
    adoption: Adoption
    position: int


def pet_adopt(
    *,
    pet_id: UUID,
    customer: Customer,
    shelter_id: UUID | None = None,
    expected_version: int | None = None,
    context: CommandContext,
) -> AdoptionStarted:
    pet = pet_load(pet_id)
    if shelter_id is not None and shelter_id != pet.shelter_id:
        raise ShelterMismatch(f"Pet {pet_id} belongs to another shelter.", shelter_id=str(pet.shelter_id))
    adoption = Adoption(id=uuid.uuid4(), pet_id=pet_id, customer=customer, shelter_id=pet.shelter_id)
    pet.adopt(adoption_id=adoption.id, customer_id=customer.id)

    def adoption_created(rows: list[StoredEvent]) -> list[sql.Statement]:  # begun by the PetAdopted event
        adoption.adopted_event_id = rows[-1].event_id
        adoption.created_at = rows[-1].recorded_at  # what auto_now_add would set, from the event
        return [sql.insert_statement(Adoption, Adoption._meta.concrete_fields, [adoption])]

    rows = _save(pet, context=context, expected_version=expected_version, also_write=adoption_created)
    sql.saved(adoption)
    return AdoptionStarted(adoption, rows[-1].position)


def pet_return(
    *, pet_id: UUID, reason: str, expected_version: int | None = None, context: CommandContext
) -> PetChange:
    pet = pet_load(pet_id)
    adoption_id = pet.adoption_id
    pet.return_to_shelter(reason=reason)

    def adoption_returned(rows: list[StoredEvent]) -> list[sql.Statement]:
        returned = {"status": Adoption.Status.RETURNED, "returned_at": rows[-1].recorded_at}
        return [sql.update_statement(Adoption, adoption_id, **returned)] if adoption_id else []

    rows = _save(pet, context=context, expected_version=expected_version, also_write=adoption_returned)
    return PetChange(pet.id, pet.version, rows[-1].position)


def pet_rename(
    *, pet_id: UUID, new_name: str, expected_version: int | None = None, context: CommandContext
) -> PetChange:
    pet = pet_load(pet_id)
    pet.rename(new_name=new_name)
    if not pet.pending_events:  # same name: nothing happened, nothing to record
        if expected_version not in (None, pet.version):
            raise ConcurrencyConflict(pet.id, expected_version, pet.version)
        return PetChange(pet.id, pet.version, last_position(pet.id))
    rows = _save(pet, context=context, expected_version=expected_version)
    return PetChange(pet.id, pet.version, rows[-1].position)


def adoption_step_succeeded(*, adopted_event_id: UUID) -> str | None:
    """Count a step of the adoption this PetAdopted event began; complete it after the last.

    Each step that succeeds calls this inside the transaction that records it. The count's
    UPDATE takes the adoption's row lock, so two last steps finishing at the same moment take
    turns, and the second adds to the count the first committed: exactly one of them sees
    every step done, and appends AdoptionCompleted. One statement, where adoption_progress
    reads every step: each step of every adoption runs this. Returns the status; None when no
    adoption began with this event.
    """
    Status = Adoption.Status
    with transaction.atomic(savepoint=False):
        counted = sql.increment(
            Adoption,
            "steps_succeeded",
            where="adopted_event_id = %(adopted_event_id)s",
            params=sql.prepared(Adoption, adopted_event_id=adopted_event_id),
            returning=["id", "status", "steps_succeeded"],
        )
        if not counted:
            return None
        [(adoption_id, status, succeeded)] = counted
        if status == Status.NEEDS_ATTENTION:  # another step may still be dead: read them all
            return adoption_progress(adopted_event_id=adopted_event_id)
        if status != Status.PROCESSING or succeeded < len(handlers_for("PetAdopted")):
            return status
        sql.update(Adoption, adoption_id, **_completed(adoption_id, adopted_event_id))
    return Status.COMPLETED


def adoption_progress(*, adopted_event_id: UUID) -> str | None:
    """Recompute the status of the adoption this PetAdopted event began from all its steps.

    Called when a step goes dead or is redriven (and by adoption_step_succeeded when the
    adoption needs attention); it also sets the count of succeeded steps right. The row lock
    makes it take turns with the steps settling at the same moment. Returns the status; None
    when no adoption began with this event (it was not appended by pet_adopt).
    """
    Status = Adoption.Status
    with transaction.atomic(savepoint=False):
        settling = adoption_locked_for_settling(adopted_event_id=adopted_event_id)
        if settling is None:
            return None
        succeeded = settling.step_statuses.count("succeeded")
        if settling.status in (Status.COMPLETED, Status.RETURNED):
            status = settling.status
        elif "dead" in settling.step_statuses:
            status = Status.NEEDS_ATTENTION
        elif succeeded == len(settling.step_statuses):
            status = Status.COMPLETED
        else:
            status = Status.PROCESSING
        changes = {"steps_succeeded": succeeded} if succeeded != settling.steps_succeeded else {}
        if status == Status.COMPLETED and settling.status != Status.COMPLETED:
            changes.update(_completed(settling.id, adopted_event_id))
        elif status != settling.status:
            changes["status"] = status
        if changes:  # most recounts: nothing changed
            sql.update(Adoption, settling.id, **changes)
    return status


def _completed(adoption_id: UUID, adopted_event_id: UUID) -> dict:
    """Append AdoptionCompleted (version 0 of the adoption's stream: once); return the
    adoption's fields that record it."""
    details = adoption_details_by_id(adoption_id)
    append(
        stream_type="adoption",
        stream_id=adoption_id,
        expected_version=0,
        events=[
            AdoptionCompleted(
                certificate_url=details.certificate_url,
                vet_appointment_date=details.vet_appointment_date,
            )
        ],
        metadata=CommandContext.system(causation_id=str(adopted_event_id)).as_metadata(),
    )
    return {"status": Adoption.Status.COMPLETED, "completed_at": timezone.now()}
