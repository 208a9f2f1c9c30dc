"""The read models, one small function per event type.

Each function changes rows through the batch (`batch.get` / `batch.put`); the framework in
readmodels/projector.py writes them in bulk with the checkpoint, in one transaction.
"""

from __future__ import annotations

from adoptions.models import Adoption, Customer, PetRecord, Shelter
from events.store import RecordedEvent

from .models import AdoptionHistoryEntry, PetListing, ShelterDashboard
from .projector import Batch, projection

available_pets = projection("available_pets", tables=(PetListing,), keyed_by_stream=(PetListing,))
adoption_history = projection("adoption_history", tables=(AdoptionHistoryEntry,))
shelter_dashboard = projection(
    "shelter_dashboard", tables=(ShelterDashboard,), replayable_from_any_point=False
)


def shelter_name(batch: Batch, shelter_id) -> str:
    return batch.lookup("shelter_names", shelter_id, _every_shelter_name) or ""


def _every_shelter_name(_) -> dict:
    return dict(Shelter.objects.values_list("id", "name"))  # a few rows: all of them at once


# ---------------------------------------------------------------- available_pets


@available_pets.on("PetRegistered")
def list_registered_pet(event: RecordedEvent, batch: Batch) -> None:
    data = event.event
    batch.put(
        batch.new(
            PetListing,
            pet_id=event.stream_id,
            name=data.name,
            species=data.species.value,
            age=data.age,
            shelter_id=data.shelter_id,
            shelter_name=shelter_name(batch, data.shelter_id),
            photo_url=data.photo_url or "",
            available=True,
            available_since=event.recorded_at,
        )
    )


@available_pets.on("PetAdopted")
def unlist_adopted_pet(event: RecordedEvent, batch: Batch) -> None:
    listing = batch.get(PetListing, event.stream_id)
    if listing is not None:
        listing.available = False
        batch.put(listing)


@available_pets.on("PetReturned")
def relist_returned_pet(event: RecordedEvent, batch: Batch) -> None:
    listing = batch.get(PetListing, event.stream_id)
    if listing is not None:
        listing.available, listing.available_since = True, event.recorded_at
        batch.put(listing)


@available_pets.on("PetNameChanged")
def rename_listing(event: RecordedEvent, batch: Batch) -> None:
    listing = batch.get(PetListing, event.stream_id)
    if listing is not None:
        listing.name = event.event.new_name
        batch.put(listing)


# ---------------------------------------------------------------- adoption_history


def _pet_shelter(batch: Batch, pet_id):
    """The pet's shelter, looked up for every pet of the batch in one query."""

    def of_the_batch_pets(pet_id) -> dict:
        pet_ids = {event.stream_id for event in batch.events} | {pet_id}
        return dict(PetRecord.objects.filter(id__in=pet_ids).values_list("id", "shelter_id"))

    return batch.lookup("pet_shelters", pet_id, of_the_batch_pets)


def _customer_name(batch: Batch, customer_id) -> str:
    """The customer's name, looked up for every adopter of the batch in one query."""

    def of_the_batch_adopters(customer_id) -> dict:
        adopters = {e.event.customer_id for e in batch.events if e.event_type == "PetAdopted"}
        customers = Customer.objects.filter(id__in=adopters | {customer_id})
        return dict(customers.values_list("id", "full_name"))

    return batch.lookup("customer_names", customer_id, of_the_batch_adopters) or ""


def _adopter(batch: Batch, adoption_id) -> tuple:
    """(customer id, name) of the adoption a return ends, for every return of the batch in
    one query; (None, "") for a return that names no adoption (older events)."""

    def of_the_batch_returns(adoption_id) -> dict:
        ended = {e.event.adoption_id for e in batch.events if e.event_type == "PetReturned"}
        adoptions = Adoption.objects.filter(id__in=(ended | {adoption_id}) - {None})
        return {
            a: (c, name) for a, c, name in adoptions.values_list("id", "customer_id", "customer__full_name")
        }

    return batch.lookup("adopters", adoption_id, of_the_batch_returns) or (None, "")


@adoption_history.on("PetAdopted")
def record_adoption(event: RecordedEvent, batch: Batch) -> None:
    data = event.event
    batch.put(
        batch.new(
            AdoptionHistoryEntry,
            event_id=event.event_id,
            position=event.position,
            pet_id=event.stream_id,
            shelter_id=data.shelter_id or _pet_shelter(batch, event.stream_id),
            kind=AdoptionHistoryEntry.Kind.ADOPTED,
            adoption_id=data.adoption_id,
            customer_id=data.customer_id,
            customer_name=_customer_name(batch, data.customer_id),
            occurred_at=event.recorded_at,
        )
    )


@adoption_history.on("PetReturned")
def record_return(event: RecordedEvent, batch: Batch) -> None:
    data = event.event
    customer_id, customer_name = _adopter(batch, data.adoption_id)
    batch.put(
        batch.new(
            AdoptionHistoryEntry,
            event_id=event.event_id,
            position=event.position,
            pet_id=event.stream_id,
            shelter_id=_pet_shelter(batch, event.stream_id),
            kind=AdoptionHistoryEntry.Kind.RETURNED,
            adoption_id=data.adoption_id,
            customer_id=customer_id,
            customer_name=customer_name,
            reason=data.reason,
            occurred_at=event.recorded_at,
        )
    )


# ---------------------------------------------------------------- shelter_dashboard


def _dashboard(batch: Batch, shelter_id):
    row = batch.get(ShelterDashboard, shelter_id)
    return row or batch.new(
        ShelterDashboard, shelter_id=shelter_id, shelter_name=shelter_name(batch, shelter_id)
    )


@shelter_dashboard.on("PetRegistered")
def count_registration(event: RecordedEvent, batch: Batch) -> None:
    row = _dashboard(batch, event.event.shelter_id)
    row.available += 1
    batch.put(row)


@shelter_dashboard.on("PetAdopted")
def count_adoption(event: RecordedEvent, batch: Batch) -> None:
    row = _dashboard(batch, event.event.shelter_id or _pet_shelter(batch, event.stream_id))
    row.available, row.adopted = row.available - 1, row.adopted + 1
    batch.put(row)


@shelter_dashboard.on("PetReturned")
def count_return(event: RecordedEvent, batch: Batch) -> None:
    row = _dashboard(batch, _pet_shelter(batch, event.stream_id))
    row.available, row.adopted, row.returned = row.available + 1, row.adopted - 1, row.returned + 1
    batch.put(row)
