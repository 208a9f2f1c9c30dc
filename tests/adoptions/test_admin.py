"""The staff console: each shelter's staff see and change only their own shelters' data."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from adoptions import services
from adoptions.management.commands.seed_demo import STAFF_GROUP, STAFF_PERMISSIONS
from adoptions.models import Adoption, PetRecord
from events.context import CommandContext
from events.models import OutboxMessage, StoredEvent
from tests.factories import StaffFactory, register_pet

pytestmark = pytest.mark.django_db

CONTEXT = CommandContext.system(causation_id="test")


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


@pytest.fixture
def staff_group(db) -> Group:
    """The group seed_demo gives shelter staff, with exactly its permissions."""
    group = Group.objects.create(name=STAFF_GROUP)
    for app_label, codename in STAFF_PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group


@pytest.fixture
def staff(staff, staff_group):
    staff.groups.add(staff_group)
    return staff


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def other_pet(other_shelter):
    return register_pet(shelter=other_shelter, name="Rex", species="cat")


def adopt(pet: PetRecord, customer) -> Adoption:
    return services.pet_adopt(pet_id=pet.id, customer=customer, context=CONTEXT).adoption


# --- pets -----------------------------------------------------------------------------


def test_staff_sees_their_shelters_pets_and_not_another_shelters(staff_client, pet, other_pet):
    response = staff_client.get(url("adoptions_petrecord_changelist"))

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [pet]
    assert other_pet.name not in response.content.decode()


def test_another_shelters_pet_by_url_is_treated_as_missing(staff_client, other_pet):
    for view in ("change", "history"):
        response = staff_client.get(url(f"adoptions_petrecord_{view}", other_pet.pk))

        # Django's admin answers an object outside get_queryset with a redirect to the index.
        assert response.status_code == 302
        assert response.url == url("index")

    renamed = staff_client.post(
        url("adoptions_petrecord_change", other_pet.pk), {"name": "Stolen", "expected_version": 1}
    )
    assert renamed.status_code == 302
    assert PetRecord.objects.get(pk=other_pet.pk).name == "Rex"


def test_shelter_filter_offers_only_the_users_shelters(client, shelter, other_shelter, staff_group):
    # given staff of two shelters, and a third shelter they do not work for
    from tests.factories import ShelterFactory

    second = ShelterFactory()
    user = StaffFactory(shelters=[shelter, second])
    user.groups.add(staff_group)
    client.force_login(user)

    response = client.get(url("adoptions_petrecord_changelist"))

    shelter_filter = next(f for f in response.context["cl"].filter_specs if f.title == "shelter")
    assert {name for _, name in shelter_filter.lookup_choices} == {shelter.name, second.name}


def test_pet_page_shows_the_event_timeline_in_order(staff_client, pet, customer, staff):
    # given a pet renamed, adopted and returned
    services.pet_rename(
        pet_id=pet.id,
        new_name="<b>Bud</b>",
        context=CommandContext(correlation_id="corr-42", actor_id=str(staff.pk)),
    )
    adopt(pet, customer)
    services.pet_return(pet_id=pet.id, reason="allergies", context=CONTEXT)

    response = staff_client.get(url("adoptions_petrecord_change", pet.pk))

    html = response.content.decode()
    assert response.status_code == 200
    timeline = html[html.index('class="event-timeline"') :]
    positions = [
        timeline.index(f"<td>{kind}</td>")
        for kind in ("PetRegistered", "PetNameChanged", "PetAdopted", "PetReturned")
    ]
    assert positions == sorted(positions)
    assert "corr-42" in timeline and staff.username in timeline
    assert "&lt;b&gt;Bud&lt;/b&gt;" in timeline and "<b>Bud</b>" not in html


def test_adding_a_pet_in_the_admin_registers_it_through_the_service(staff_client, shelter, staff):
    response = staff_client.post(
        url("adoptions_petrecord_add"),
        {"name": "Nala", "species": "cat", "age": 3, "shelter": shelter.pk, "photo_url": ""},
    )

    pet = PetRecord.objects.get(name="Nala")
    assert response.status_code == 302
    assert response.url == url("adoptions_petrecord_changelist")
    assert (pet.shelter, pet.species, pet.status, pet.version) == (shelter, "cat", "available", 1)
    registered = StoredEvent.objects.get(stream_id=pet.pk)
    assert registered.event_type == "PetRegistered"
    assert registered.metadata["actor_id"] == str(staff.pk)
    assert OutboxMessage.objects.filter(event_id=registered.event_id).exists()


def test_staff_cannot_add_a_pet_to_another_shelter(staff_client, other_shelter):
    response = staff_client.post(
        url("adoptions_petrecord_add"),
        {"name": "Nala", "species": "cat", "age": 3, "shelter": other_shelter.pk},
    )

    assert response.status_code == 200
    assert "shelter" in response.context["adminform"].form.errors
    assert not StoredEvent.objects.exists()


def test_renaming_in_the_admin_records_pet_name_changed(staff_client, pet):
    response = staff_client.post(
        url("adoptions_petrecord_change", pet.pk), {"name": "Buster", "expected_version": 1}
    )

    assert response.status_code == 302
    assert PetRecord.objects.get(pk=pet.pk).name == "Buster"
    renamed = StoredEvent.objects.get(stream_id=pet.pk, stream_version=2)
    assert (renamed.event_type, renamed.payload["new_name"]) == ("PetNameChanged", "Buster")


def test_renaming_a_pet_that_changed_meanwhile_records_nothing(staff_client, pet, customer):
    # given the page was opened at version 1, then the pet was adopted (version 2)
    adopt(pet, customer)

    response = staff_client.post(
        url("adoptions_petrecord_change", pet.pk),
        {"name": "Buster", "expected_version": 1},
        follow=True,
    )

    assert "Nothing was saved" in response.content.decode()
    assert PetRecord.objects.get(pk=pet.pk).name == "Buddy"
    assert StoredEvent.objects.filter(stream_id=pet.pk).count() == 2


def test_staff_without_change_permission_see_the_pet_read_only(staff_client, staff, pet):
    # given a staff member whose group lost change_petrecord
    staff.groups.get().permissions.remove(Permission.objects.get(codename="change_petrecord"))

    response = staff_client.get(url("adoptions_petrecord_change", pet.pk))
    renamed = staff_client.post(
        url("adoptions_petrecord_change", pet.pk), {"name": "Buster", "expected_version": 1}
    )

    assert response.status_code == 200
    assert 'name="name"' not in response.content.decode()
    assert "PetRegistered" in response.content.decode()
    assert renamed.status_code == 403


def test_pets_cannot_be_deleted_in_the_admin(admin_client, pet):
    response = admin_client.post(url("adoptions_petrecord_delete", pet.pk), {"post": "yes"})

    assert response.status_code == 403
    assert PetRecord.objects.filter(pk=pet.pk).exists()


def test_pet_autocomplete_does_not_leak_another_shelters_pets(staff_client, pet, other_pet):
    response = staff_client.get(
        url("autocomplete"),
        {"app_label": "adoptions", "model_name": "adoption", "field_name": "pet", "term": ""},
    )

    assert [r["text"] for r in response.json()["results"]] == [str(pet)]


# --- shelters, customers, adoptions ----------------------------------------------------


def test_staff_see_only_their_own_shelters(staff_client, shelter, other_shelter):
    listed = staff_client.get(url("adoptions_shelter_changelist"))
    by_url = staff_client.get(url("adoptions_shelter_change", other_shelter.pk))

    assert list(listed.context["cl"].result_list) == [shelter]
    assert by_url.status_code == 302


def test_shelter_autocomplete_offers_only_the_users_shelters(staff_client, shelter, other_shelter):
    response = staff_client.get(
        url("autocomplete"),
        {"app_label": "adoptions", "model_name": "petrecord", "field_name": "shelter", "term": ""},
    )

    assert [r["text"] for r in response.json()["results"]] == [shelter.name]


def test_staff_see_customers_who_adopted_from_their_shelters(
    staff_client, pet, other_pet, customer, other_customer
):
    adopt(pet, customer)
    adopt(other_pet, other_customer)

    listed = staff_client.get(url("adoptions_customer_changelist"))
    by_url = staff_client.get(url("adoptions_customer_change", other_customer.pk))

    assert list(listed.context["cl"].result_list) == [customer]
    assert by_url.status_code == 302


def test_adoptions_are_scoped_and_read_only(staff_client, pet, other_pet, customer, other_customer):
    mine, theirs = adopt(pet, customer), adopt(other_pet, other_customer)

    listed = staff_client.get(url("adoptions_adoption_changelist"))
    changed = staff_client.post(url("adoptions_adoption_change", mine.pk), {"status": "returned"})

    assert list(listed.context["cl"].result_list) == [mine]
    assert staff_client.get(url("adoptions_adoption_change", theirs.pk)).status_code == 302
    assert changed.status_code == 403
    assert Adoption.objects.get(pk=mine.pk).status == Adoption.Status.PROCESSING


# --- the event log and the outbox --------------------------------------------------------


def test_staff_see_only_their_shelters_events(staff_client, pet, other_pet):
    response = staff_client.get(url("events_storedevent_changelist"))

    assert {e.stream_id for e in response.context["cl"].result_list} == {pet.pk}
    other_event = StoredEvent.objects.get(stream_id=other_pet.pk)
    assert staff_client.get(url("events_storedevent_change", other_event.pk)).status_code == 302


@pytest.mark.parametrize("who", ["staff", "superuser"])
def test_stored_events_cannot_be_changed_or_deleted(client, staff, admin_user, pet, who):
    client.force_login(staff if who == "staff" else admin_user)
    event = StoredEvent.objects.get(stream_id=pet.pk)

    changed = client.post(url("events_storedevent_change", event.pk), {"event_type": "Forged"})
    deleted = client.post(url("events_storedevent_delete", event.pk), {"post": "yes"})
    added = client.get(url("events_storedevent_add"))

    assert (changed.status_code, deleted.status_code, added.status_code) == (403, 403, 403)
    assert StoredEvent.objects.get(pk=event.pk).event_type == "PetRegistered"


def test_outbox_shows_the_pending_count_of_the_users_shelters(staff_client, pet, other_pet):
    # given PetRegistered and PetAvailable for each pet, one of ours already sent
    sent = OutboxMessage.objects.filter(**{"headers__stream-id": str(pet.pk)}).first()
    OutboxMessage.objects.filter(pk=sent.pk).update(published_at=sent.created_at)

    response = staff_client.get(url("events_outboxmessage_changelist"))
    pending = staff_client.get(url("events_outboxmessage_changelist"), {"state": "pending"})

    html = response.content.decode()
    assert response.context["backlog"].pending == 1
    assert "1 pending" in html and "the oldest has waited" in html
    assert {m.headers["stream-id"] for m in response.context["cl"].result_list} == {str(pet.pk)}
    assert len(pending.context["cl"].result_list) == 1


def test_outbox_with_nothing_pending_says_so(staff_client, pet):
    OutboxMessage.objects.update(published_at=pet.registered_at)

    response = staff_client.get(url("events_outboxmessage_changelist"))

    assert "0 pending" in response.content.decode()


# --- who may log in -----------------------------------------------------------------------


def test_a_customer_cannot_log_into_the_admin(client, customer):
    login = client.post(url("login"), {"username": customer.user.username, "password": "pass-for-tests"})
    client.force_login(customer.user)
    index = client.get(url("index"))

    assert login.status_code == 200
    assert "staff account" in login.content.decode()
    assert index.status_code == 302
    assert index.url.startswith(url("login"))


def test_superuser_sees_everything(admin_client, pet, other_pet, customer):
    adopt(other_pet, customer)

    pets = admin_client.get(url("adoptions_petrecord_changelist"))
    events = admin_client.get(url("events_storedevent_changelist"))
    outbox = admin_client.get(url("events_outboxmessage_changelist"))

    assert set(pets.context["cl"].result_list) == {pet, other_pet}
    assert len(events.context["cl"].result_list) == StoredEvent.objects.count() == 3
    assert outbox.context["backlog"].pending == OutboxMessage.objects.count()
    assert admin_client.get(url("adoptions_petrecord_change", other_pet.pk)).status_code == 200
