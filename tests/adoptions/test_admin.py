"""The staff console: each shelter's staff see and change only their own shelters' data."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from adoptions import services
from adoptions.admin import PetAddForm, check_declared
from adoptions.models import Adoption, PetRecord
from events.catalogue import PetRegistered
from events.context import CommandContext
from events.models import OutboxMessage, StoredEvent
from tests.factories import StaffFactory, register_pet

pytestmark = pytest.mark.django_db

CONTEXT = CommandContext.system(causation_id="test")


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


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


# --- registering, renaming and returning: the forms say what is wrong ---------------------


def test_registering_with_invalid_input_shows_each_error_on_the_form(staff_client, shelter):
    response = staff_client.post(
        url("adoptions_petrecord_add"),
        {"name": "", "species": "dragon", "age": -1, "shelter": shelter.pk, "photo_url": "not a url"},
    )

    errors = response.context["adminform"].form.errors
    assert response.status_code == 200
    assert set(errors) == {"name", "species", "age", "photo_url"}
    assert "Please correct the errors below." in response.content.decode()
    assert not StoredEvent.objects.exists() and not PetRecord.objects.exists()


def test_what_the_event_declaration_refuses_lands_on_the_form_field(shelter):
    # given a form whose fields passed, and values the PetRegistered declaration refuses
    form = PetAddForm(data={"name": "Nala", "species": "cat", "age": 3, "shelter": shelter.pk})
    assert form.is_valid()

    check_declared(
        form,
        PetRegistered,
        {"shelter_id": "shelter"},
        name="N" * 101,
        species="dragon",
        age=3,
        shelter_id="not-a-uuid",
    )

    assert set(form.errors) == {"name", "species", "shelter"}
    assert "at most 100 characters" in form.errors["name"][0]


def test_renaming_to_an_empty_name_is_refused_on_the_form(staff_client, pet):
    response = staff_client.post(
        url("adoptions_petrecord_change", pet.pk), {"name": " ", "expected_version": 1}
    )

    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert StoredEvent.objects.filter(stream_id=pet.pk).count() == 1


def return_url(pet: PetRecord) -> str:
    return url("adoptions_petrecord_return", pet.pk)


def test_only_an_adopted_pets_page_offers_to_record_a_return(staff_client, pet, customer):
    available = staff_client.get(url("adoptions_petrecord_change", pet.pk)).content.decode()
    adopt(pet, customer)
    adopted = staff_client.get(url("adoptions_petrecord_change", pet.pk)).content.decode()

    assert "Record a return" not in available
    assert f'<a href="{return_url(pet)}" class="pet-return-link">Record a return</a>' in adopted


def test_recording_a_return_records_pet_returned_with_the_reason(staff_client, staff, pet, customer):
    # given an adopted pet (version 2)
    adoption = adopt(pet, customer)

    page = staff_client.get(return_url(pet))
    response = staff_client.post(
        return_url(pet), {"reason": "Allergic to <cats>", "expected_version": 2}, follow=True
    )

    returned = StoredEvent.objects.get(stream_id=pet.pk, stream_version=3)
    assert page.status_code == 200 and customer.full_name in page.content.decode()
    assert response.redirect_chain == [(url("adoptions_petrecord_change", pet.pk), 302)]
    assert "Buddy is back at" in response.content.decode()
    assert (returned.event_type, returned.payload["reason"]) == ("PetReturned", "Allergic to <cats>")
    assert returned.metadata["actor_id"] == str(staff.pk)
    assert PetRecord.objects.get(pk=pet.pk).status == "available"
    assert Adoption.objects.get(pk=adoption.pk).status == Adoption.Status.RETURNED
    assert "Allergic to &lt;cats&gt;" in section(response, "event-timeline")


def section(response, css_class: str) -> str:
    html = response.content.decode()
    start = html.index(f'class="{css_class}"')
    return html[start : html.index("</table>", start)]


def test_a_return_without_a_reason_is_refused_on_the_form(staff_client, pet, customer):
    adopt(pet, customer)

    response = staff_client.post(return_url(pet), {"reason": "  ", "expected_version": 2})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert PetRecord.objects.get(pk=pet.pk).status == "adopted"
    assert not StoredEvent.objects.filter(event_type="PetReturned").exists()


@pytest.mark.parametrize("adopted", [False, True])
def test_a_return_the_pet_refuses_says_why_and_records_nothing(staff_client, pet, customer, adopted):
    # given a pet that is not adopted, or one that changed since the page showed version 1
    if adopted:
        adopt(pet, customer)

    response = staff_client.post(return_url(pet), {"reason": "moved abroad", "expected_version": 1})

    html = response.content.decode()
    assert response.status_code == 200
    assert "Nothing was recorded:" in html
    assert ("version" if adopted else "is not adopted, so it cannot be returned") in html
    assert not StoredEvent.objects.filter(event_type="PetReturned").exists()


def test_staff_of_another_shelter_cannot_record_a_return(staff_client, other_pet, other_customer):
    adopt(other_pet, other_customer)

    page = staff_client.get(return_url(other_pet))
    posted = staff_client.post(return_url(other_pet), {"reason": "mine now", "expected_version": 2})

    assert (page.status_code, posted.status_code) == (404, 404)
    assert PetRecord.objects.get(pk=other_pet.pk).status == "adopted"


def test_staff_without_change_permission_cannot_record_a_return(staff_client, staff, pet, customer):
    staff.groups.get().permissions.remove(Permission.objects.get(codename="change_petrecord"))
    adopt(pet, customer)

    page = staff_client.get(url("adoptions_petrecord_change", pet.pk))
    posted = staff_client.post(return_url(pet), {"reason": "moved abroad", "expected_version": 2})

    assert "Record a return" not in page.content.decode()
    assert posted.status_code == 403
    assert PetRecord.objects.get(pk=pet.pk).status == "adopted"


def test_recording_a_return_is_csrf_protected(staff, pet, customer):
    adopt(pet, customer)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)

    forged = client.post(return_url(pet), {"reason": "moved abroad", "expected_version": 2})

    assert forged.status_code == 403
    assert PetRecord.objects.get(pk=pet.pk).status == "adopted"


# --- lists: filters and search, never past the user's shelters ------------------------------


def listed(client, name: str, **params) -> list:
    response = client.get(url(name), params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_pet_list_filters_by_status_and_searches_by_name_or_id(staff_client, shelter, customer):
    buddy, max_, kiwi = (register_pet(shelter=shelter, name=n) for n in ("Buddy", "Max", "Kiwi"))
    adopt(buddy, customer)

    assert listed(staff_client, "adoptions_petrecord_changelist", status="adopted") == [buddy]
    assert listed(staff_client, "adoptions_petrecord_changelist", status="available") == [kiwi, max_]
    assert listed(staff_client, "adoptions_petrecord_changelist", status="available", q="ma") == [max_]
    assert listed(staff_client, "adoptions_petrecord_changelist", q=str(kiwi.pk)) == [kiwi]


def test_filtering_or_searching_for_another_shelters_rows_finds_nothing(
    staff_client, pet, other_pet, other_shelter, other_customer
):
    theirs = adopt(other_pet, other_customer)
    their_event = StoredEvent.objects.filter(stream_id=other_pet.pk).first()
    pets = "adoptions_petrecord_changelist"

    # (with one shelter of their own the shelter filter is not offered, and the list stays theirs)
    assert listed(staff_client, pets, shelter__id__exact=other_shelter.pk) == [pet]
    assert listed(staff_client, pets, q="Rex") == []
    assert listed(staff_client, pets, q=str(other_pet.pk)) == []
    assert listed(staff_client, "adoptions_adoption_changelist", q="Rex") == []
    assert listed(staff_client, "adoptions_adoption_changelist", shelter__id__exact=other_shelter.pk) == []
    assert listed(staff_client, "events_storedevent_changelist", q=str(other_pet.pk)) == []
    assert listed(staff_client, "events_storedevent_changelist", q=str(theirs.pk)) == []
    assert listed(staff_client, "events_outboxmessage_changelist", q=str(their_event.event_id)) == []
    assert listed(staff_client, "events_delivery_changelist", q=str(theirs.adopted_event_id)) == []


def test_the_shelter_filter_with_another_shelters_id_finds_nothing(client, shelter, other_pet, staff_group):
    # given staff of two shelters, so the shelter filter is offered
    from tests.factories import ShelterFactory

    second = ShelterFactory()
    user = StaffFactory(shelters=[shelter, second])
    user.groups.add(staff_group)
    client.force_login(user)
    register_pet(shelter=second, name="Kiwi")

    filtered = listed(client, "adoptions_petrecord_changelist", shelter__id__exact=other_pet.shelter_id)

    assert filtered == []


def test_the_raw_id_lookup_popup_lists_only_the_users_shelters_pets(staff_client, pet, other_pet):
    popup = listed(staff_client, "adoptions_petrecord_changelist", _to_field="id", _popup=1)
    by_id = listed(staff_client, "adoptions_petrecord_changelist", _to_field="id", _popup=1, id=other_pet.pk)

    assert popup == [pet]
    assert by_id == []


def test_customer_autocomplete_offers_only_customers_of_the_users_shelters(
    staff_client, pet, other_pet, customer, other_customer
):
    adopt(pet, customer)
    adopt(other_pet, other_customer)

    response = staff_client.get(
        url("autocomplete"),
        {"app_label": "adoptions", "model_name": "adoption", "field_name": "customer", "term": ""},
    )

    assert [r["text"] for r in response.json()["results"]] == [str(customer)]
