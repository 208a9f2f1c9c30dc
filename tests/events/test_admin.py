"""The event log in the staff console: open an event, see every handler it fanned out to."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from adoptions import services
from events.context import CommandContext
from events.delivery import deliver
from events.handlers import handlers_for
from events.models import Delivery, StoredEvent
from tests.factories import adopt_pet, register_pet

pytestmark = pytest.mark.django_db

INVENTORY = "adoptions.inventory"


@pytest.fixture
def staff_client(staff) -> Client:
    """Staff who may read the event log and the deliveries, and nothing else."""
    for codename in ("view_storedevent", "view_delivery"):
        staff.user_permissions.add(
            Permission.objects.get(content_type__app_label="events", codename=codename)
        )
    client = Client()
    client.force_login(staff)
    return client


def event_page(client: Client, event: StoredEvent):
    return client.get(reverse("admin:events_storedevent_change", args=[event.pk]))


def deliveries(response) -> str:
    html = response.content.decode()
    start = html.index('class="event-deliveries"')
    return html[start : html.index("</table>", start)]


def test_a_registration_shows_the_inventory_handler_and_how_its_delivery_went(staff_client, pet):
    registered = StoredEvent.objects.get(stream_id=pet.pk)
    deliver(INVENTORY, registered.event_id)

    response = event_page(staff_client, registered)

    delivery = Delivery.objects.get(handler=INVENTORY, event_id=registered.event_id)
    link = reverse("admin:events_delivery_change", args=[delivery.pk])
    assert response.status_code == 200
    assert f'<a href="{link}">{INVENTORY}</a></td><td>succeeded</td><td>1</td>' in deliveries(response)


def test_an_adoption_lists_all_seven_handlers_with_each_outcome(staff_client, pet, customer):
    # given an adoption whose certificate step ran and whose vet step is out of attempts
    adoption = adopt_pet(pet=pet, customer=customer).adoption
    adopted = StoredEvent.objects.get(event_id=adoption.adopted_event_id)
    deliver("notifications.certificate", adopted.event_id)
    Delivery.objects.create(
        handler="adoptions.vet_appointment",
        event_id=adopted.event_id,
        event_type="PetAdopted",
        status=Delivery.Status.DEAD,
        attempts=6,
        last_error="NoFreeSlot: calendar full",
    )

    table = deliveries(event_page(staff_client, adopted))

    assert len(handlers_for("PetAdopted")) == 7
    assert table.count("<tr class=") == 7
    assert 'class="delivery-succeeded"' in table and ">notifications.certificate</a>" in table
    assert '<tr class="delivery-dead">' in table and "NoFreeSlot: calendar full" in table
    assert table.count('<tr class="delivery-not-started"><td>') == 5


def test_an_event_no_handler_subscribes_to_says_so(staff_client, pet):
    services.pet_rename(pet_id=pet.id, new_name="Bud", context=CommandContext.system(causation_id="test"))
    renamed = StoredEvent.objects.get(stream_id=pet.pk, event_type="PetNameChanged")

    response = event_page(staff_client, renamed)

    assert "No handler subscribes to this event." in response.content.decode()


def test_another_shelters_event_is_not_shown_to_staff_but_is_to_a_superuser(
    staff_client, admin_client, other_shelter
):
    theirs = StoredEvent.objects.get(stream_id=register_pet(shelter=other_shelter).pk)

    assert event_page(staff_client, theirs).status_code == 302  # the admin's "no such object"
    assert INVENTORY in deliveries(event_page(admin_client, theirs))


def test_the_event_list_filters_by_type(staff_client, pet, customer):
    adopt_pet(pet=pet, customer=customer)

    response = staff_client.get(reverse("admin:events_storedevent_changelist"), {"event_type": "PetAdopted"})

    assert [e.event_type for e in response.context["cl"].result_list] == ["PetAdopted"]
