"""The adoption's own steps, run by Celery when a PetAdopted event is published.

Together with notifications/handlers.py these are the seven steps of an adoption; each one
settles by counting itself towards the adoption's completion (services.adoption_step_succeeded).
"""

from __future__ import annotations

from events import sql
from events.handlers import PermanentFailure, event_handler
from events.models import Delivery
from events.store import RecordedEvent

from . import aftercare, services
from .models import Adoption


def adoption_settled(delivery: Delivery) -> None:
    if delivery.event_type != "PetAdopted":
        return
    if delivery.status == Delivery.Status.SUCCEEDED:  # most settle so: count it
        services.adoption_step_succeeded(adopted_event_id=delivery.event_id)
    else:  # dead, or redriven: look at every step
        services.adoption_progress(adopted_event_id=delivery.event_id)


def adoption_step(
    name: str,
    *,
    queue: str,
    on: tuple[str, ...] = ("PetAdopted",),
    time_limit: int = 60,
    max_attempts: int = 0,
):
    """Declare a handler that is one step of every adoption."""
    return event_handler(
        name=name,
        on=on,
        queue=queue,
        time_limit=time_limit,
        max_attempts=max_attempts,
        on_settled=adoption_settled,
    )


def adoption_of(event: RecordedEvent) -> Adoption:
    """The adoption with its pet, customer and shelter: one plain SELECT (events/sql.py), as
    six of the seven steps of every adoption run it."""
    return sql.get_with_related(Adoption, event.event.adoption_id, ["pet", "customer", "shelter"])


@adoption_step("adoptions.inventory", queue="inventory", on=("PetRegistered", "PetAdopted", "PetReturned"))
def update_inventory(event: RecordedEvent) -> None:
    if event.event_type == "PetRegistered":
        aftercare.inventory_apply(shelter_id=event.event.shelter_id, available=1)
    elif event.event_type == "PetAdopted":
        # Our PetAdopted names the shelter; the field is optional in the contract, so an event
        # without it is looked up (one more query for every adoption otherwise).
        shelter_id = event.event.shelter_id or aftercare.pet_shelter_id(event.stream_id)
        aftercare.inventory_apply(shelter_id=shelter_id, available=-1, adopted=1)
    else:
        aftercare.inventory_apply(
            shelter_id=aftercare.pet_shelter_id(event.stream_id), available=1, adopted=-1, returned=1
        )


@adoption_step("adoptions.vet_appointment", queue="vet-appointments")
def schedule_vet_appointment(event: RecordedEvent) -> None:
    try:
        aftercare.vet_appointment_schedule(adoption=adoption_of(event))
    except aftercare.NoVetSlots as error:  # staff must fix the shelter's hours, then redrive
        raise PermanentFailure(str(error)) from error


@adoption_step("adoptions.welcome_package", queue="welcome-packages")
def send_welcome_package(event: RecordedEvent) -> None:
    aftercare.welcome_package_send(adoption=adoption_of(event))


@adoption_step("adoptions.analytics", queue="analytics")
def update_analytics(event: RecordedEvent) -> None:
    aftercare.analytics_record(adoption=adoption_of(event))
