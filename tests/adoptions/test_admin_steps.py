"""The staff console's view of an adoption's steps, its dead letters, and retrying them."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import localize

from adoptions import services
from adoptions.models import (
    Adoption,
    AdoptionStats,
    ShelterInventory,
    VetAppointment,
    WelcomePackage,
)
from events.context import CommandContext
from events.delivery import deliver
from events.handlers import handlers_for
from events.models import Delivery, OutboxMessage, StoredEvent
from notifications.models import Certificate, SentEmail
from tests.factories import register_pet

pytestmark = pytest.mark.django_db

CONTEXT = CommandContext.system(causation_id="test")
VET, WELCOME, CERTIFICATE = (
    "adoptions.vet_appointment",
    "adoptions.welcome_package",
    "notifications.certificate",
)


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


@pytest.fixture
def staff(staff, staff_group):
    staff.groups.add(staff_group)
    return staff


@pytest.fixture
def staff_client(staff):
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def other_staff_client(other_staff, staff_group):
    other_staff.groups.add(staff_group)
    client = Client()
    client.force_login(other_staff)
    return client


@pytest.fixture
def adoption(pet, customer) -> Adoption:
    return services.pet_adopt(pet_id=pet.id, customer=customer, context=CONTEXT).adoption


@pytest.fixture
def other_adoption(other_shelter, other_customer) -> Adoption:
    rex = register_pet(shelter=other_shelter, name="Rex", species="cat")
    return services.pet_adopt(pet_id=rex.id, customer=other_customer, context=CONTEXT).adoption


def delivery(adoption: Adoption, handler: str, status: str, *, attempts=6, error="") -> Delivery:
    """Record how a step went, as events.delivery would have."""
    return Delivery.objects.create(
        handler=handler,
        event_id=adoption.adopted_event_id,
        event_type="PetAdopted",
        status=status,
        attempts=attempts,
        last_error=error,
        finished_at=timezone.now(),
    )


def run_steps(adoption: Adoption) -> None:
    """Run every step of the adoption once, as the Celery workers would."""
    for handler in handlers_for("PetAdopted"):
        deliver(handler.name, adoption.adopted_event_id)


def retry_url(adoption: Adoption) -> str:
    return url("adoptions_adoption_retry", adoption.pk)


def section(response, css_class: str) -> str:
    html = response.content.decode()
    start = html.index(f'class="{css_class}"')
    return html[start : html.index("</table>", start)]


# --- the adoption page ---------------------------------------------------------------------


def test_adoption_page_shows_the_seven_steps_with_their_status(staff_client, adoption):
    # given one step dead, one succeeded, and five not started yet
    delivery(adoption, VET, "dead", error="NoFreeSlot: <none before Friday>")
    delivery(adoption, CERTIFICATE, "succeeded", attempts=1)

    response = staff_client.get(url("adoptions_adoption_change", adoption.pk))

    steps = section(response, "adoption-steps")
    names = [h.name for h in handlers_for("PetAdopted")]
    assert response.status_code == 200 and len(names) == 7
    for name in names:
        status = {VET: "dead", CERTIFICATE: "succeeded"}.get(name, "pending")
        assert f'<tr class="step-{status}"><td>{name}</td><td>{status}</td>' in steps
    assert "NoFreeSlot: &lt;none before Friday&gt;" in steps
    assert "Status: <strong>processing</strong>" in response.content.decode()


def test_only_a_dead_step_has_a_retry_button(staff_client, adoption):
    delivery(adoption, VET, "dead")
    delivery(adoption, CERTIFICATE, "succeeded", attempts=1)

    response = staff_client.get(url("adoptions_adoption_change", adoption.pk))

    steps, html = section(response, "adoption-steps"), response.content.decode()
    assert steps.count(">Retry</button>") == 1
    assert f'form="adoption-step-retry" name="handler" value="{VET}"' in steps
    # the form the button submits: outside the change form, posting to the retry URL
    assert re.search(
        rf'<form id="adoption-step-retry" method="post" action="{retry_url(adoption)}">'
        r'<input type="hidden" name="csrfmiddlewaretoken"',
        html,
    )


def test_the_page_shows_certificate_link_and_vet_date_once_the_steps_ran(
    staff_client, adoption, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    run_steps(adoption)

    response = staff_client.get(url("adoptions_adoption_change", adoption.pk))

    html = response.content.decode()
    certificate_url = reverse("adoption-certificate", args=[adoption.pk])
    vet_date = timezone.localtime(VetAppointment.objects.get(adoption=adoption).starts_at)
    assert "Status: <strong>completed</strong>" in html
    assert f'<a href="{certificate_url}">certificate (PDF)</a>' in html
    assert f"Vet appointment: {localize(vet_date)}</p>" in html
    assert section(response, "adoption-steps").count('class="step-succeeded"') == 7
    pdf = staff_client.get(certificate_url)  # the API accepts the admin's session
    assert (pdf.status_code, pdf["Content-Type"]) == (200, "application/pdf")
    pdf.close()


# --- retrying a step -----------------------------------------------------------------------


def test_retrying_a_dead_step_schedules_its_handler_again(staff_client, adoption):
    # given a dead step, so the adoption needs attention
    delivery(adoption, VET, "dead", error="NoFreeSlot")
    services.adoption_progress(adopted_event_id=adoption.adopted_event_id)

    response = staff_client.post(retry_url(adoption), {"handler": VET}, follow=True)

    change_page = url("adoptions_adoption_change", adoption.pk)
    dead_letter = Delivery.objects.get(handler=VET, event_id=adoption.adopted_event_id)
    scheduled = OutboxMessage.objects.filter(handler=VET, event_id=adoption.adopted_event_id)
    assert response.redirect_chain == [(change_page, 302)]
    assert f"Retrying step {VET}" in response.content.decode()
    assert (dead_letter.status, dead_letter.attempts) == ("pending", 0)
    assert scheduled.count() == 1 and scheduled.get().published_at is None
    assert Adoption.objects.get(pk=adoption.pk).status == Adoption.Status.PROCESSING


def test_retry_is_csrf_protected(staff, adoption):
    delivery(adoption, VET, "dead")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)

    forged = client.post(retry_url(adoption), {"handler": VET})
    page = client.get(url("adoptions_adoption_change", adoption.pk)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    genuine = client.post(retry_url(adoption), {"handler": VET, "csrfmiddlewaretoken": token})

    assert forged.status_code == 403
    assert genuine.status_code == 302
    assert OutboxMessage.objects.filter(handler=VET).count() == 1


def test_staff_of_another_shelter_cannot_retry(other_staff_client, adoption):
    delivery(adoption, VET, "dead")

    response = other_staff_client.post(retry_url(adoption), {"handler": VET})

    # the adoption is outside their scope, so it answers as if it did not exist
    assert response.status_code == 404
    assert Delivery.objects.get(handler=VET).status == "dead"
    assert not OutboxMessage.objects.filter(handler=VET).exists()


def test_staff_without_change_delivery_see_no_retry_and_cannot_redrive(staff_client, staff, adoption):
    # given a staff member whose group lost change_delivery
    staff.groups.get().permissions.remove(Permission.objects.get(codename="change_delivery"))
    delivery(adoption, VET, "dead")

    page = staff_client.get(url("adoptions_adoption_change", adoption.pk))
    retried = staff_client.post(retry_url(adoption), {"handler": VET})
    listed = staff_client.get(url("events_delivery_changelist"))

    assert page.status_code == 200
    assert f"<td>{VET}</td><td>dead</td>" in section(page, "adoption-steps")
    assert "Retry</button>" not in page.content.decode()
    assert "adoption-step-retry" not in page.content.decode()
    assert retried.status_code == 403
    assert listed.context["action_form"] is None  # redrive was the one action it could offer
    assert Delivery.objects.get(handler=VET).status == "dead"


def test_retrying_a_step_that_is_not_dead_changes_nothing(staff_client, adoption):
    delivery(adoption, VET, "succeeded", attempts=1)

    not_dead = staff_client.post(retry_url(adoption), {"handler": VET}, follow=True)
    unknown = staff_client.post(retry_url(adoption), {"handler": ""}, follow=True)

    assert f"Nothing to retry: step {VET} is not dead." in not_dead.content.decode()
    assert "Not a step of this adoption: &#x27;&#x27;." in unknown.content.decode()
    assert not OutboxMessage.objects.exclude(handler="").exists()
    assert Delivery.objects.get(handler=VET).status == "succeeded"


def test_retry_takes_only_post(staff_client, adoption):
    assert staff_client.get(retry_url(adoption)).status_code == 405


# --- the deliveries (dead letters) ---------------------------------------------------------


def test_staff_of_another_shelter_do_not_see_the_delivery(other_staff_client, adoption, other_adoption):
    mine = delivery(adoption, VET, "dead")
    theirs = delivery(other_adoption, VET, "dead")

    listed = other_staff_client.get(url("events_delivery_changelist"))
    by_url = other_staff_client.get(url("events_delivery_change", mine.pk))

    assert listed.status_code == 200
    assert "Deliveries (dead letters)" in listed.content.decode()
    assert list(listed.context["cl"].result_list) == [theirs]
    assert by_url.status_code == 302  # the admin's answer for an object outside its queryset


def test_superuser_sees_every_delivery(admin_client, adoption, other_adoption):
    both = {delivery(adoption, VET, "dead"), delivery(other_adoption, VET, "dead")}

    listed = admin_client.get(url("events_delivery_changelist"), {"status": "dead"})

    assert set(listed.context["cl"].result_list) == both


def test_redrive_action_redrives_only_the_dead_deliveries(staff_client, adoption, other_adoption):
    # given two dead steps, one succeeded, and another shelter's dead step picked by id
    dead = [delivery(adoption, VET, "dead"), delivery(adoption, WELCOME, "dead")]
    done = delivery(adoption, CERTIFICATE, "succeeded", attempts=1)
    theirs = delivery(other_adoption, VET, "dead")
    services.adoption_progress(adopted_event_id=adoption.adopted_event_id)

    response = staff_client.post(
        url("events_delivery_changelist"),
        {"action": "redrive_dead", "_selected_action": [d.pk for d in [*dead, done, theirs]]},
        follow=True,
    )

    assert "Redrove 2 dead deliveries (1 not dead, left alone)." in response.content.decode()
    assert {d.handler for d in Delivery.objects.filter(status="pending")} == {VET, WELCOME}
    assert Delivery.objects.get(pk=done.pk).status == "succeeded"
    assert Delivery.objects.get(pk=theirs.pk).status == "dead"
    scheduled = OutboxMessage.objects.exclude(handler="")
    assert {(m.handler, m.event_id) for m in scheduled} == {
        (VET, adoption.adopted_event_id),
        (WELCOME, adoption.adopted_event_id),
    }
    assert Adoption.objects.get(pk=adoption.pk).status == Adoption.Status.PROCESSING


def test_deliveries_are_read_only(staff_client, adoption):
    dead = delivery(adoption, VET, "dead")

    changed = staff_client.post(url("events_delivery_change", dead.pk), {"status": "succeeded"})
    deleted = staff_client.post(url("events_delivery_delete", dead.pk), {"post": "yes"})

    assert (changed.status_code, deleted.status_code) == (403, 403)
    assert Delivery.objects.get(pk=dead.pk).status == "dead"


def test_event_page_lists_every_delivery_of_the_event(staff_client, adoption):
    delivery(adoption, VET, "dead", error="NoFreeSlot: calendar full")
    delivery(adoption, CERTIFICATE, "succeeded", attempts=1)
    event = StoredEvent.objects.get(event_id=adoption.adopted_event_id)

    response = staff_client.get(url("events_storedevent_change", event.pk))

    deliveries = section(response, "event-deliveries")
    assert response.status_code == 200
    assert f">{VET}</a></td><td>dead</td><td>6</td>" in deliveries
    assert "NoFreeSlot: calendar full" in deliveries
    assert f">{CERTIFICATE}</a></td><td>succeeded</td><td>1</td>" in deliveries
    assert deliveries.count("no delivery yet") == 5


# --- what the steps wrote ------------------------------------------------------------------


def test_what_the_steps_wrote_is_read_only_and_scoped_to_the_shelter(
    staff_client, shelter, adoption, other_adoption, settings, tmp_path
):
    # given every step has run for an adoption at each shelter
    settings.MEDIA_ROOT = tmp_path
    run_steps(adoption)
    run_steps(other_adoption)
    ours = {
        "adoptions_vetappointment": VetAppointment.objects.filter(shelter=shelter),
        "adoptions_welcomepackage": WelcomePackage.objects.filter(adoption=adoption),
        "adoptions_shelterinventory": ShelterInventory.objects.filter(shelter=shelter),
        "adoptions_adoptionstats": AdoptionStats.objects.filter(shelter=shelter),
        "notifications_sentemail": SentEmail.objects.filter(event_id=adoption.adopted_event_id),
        "notifications_certificate": Certificate.objects.filter(adoption=adoption),
    }

    for page, expected in ours.items():
        listed = staff_client.get(url(f"{page}_changelist"))
        row = expected.first()

        assert expected.exists() and expected.model.objects.count() > expected.count(), page
        assert set(listed.context["cl"].result_list) == set(expected), page
        assert staff_client.get(url(f"{page}_change", row.pk)).status_code == 200, page
        assert staff_client.get(url(f"{page}_add")).status_code == 403, page
        assert staff_client.post(url(f"{page}_delete", row.pk), {"post": "yes"}).status_code == 403
