"""The relay's housekeeping: every app's chores run, one failing never stops the others."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from adoptions import services
from adoptions.chores import recount_adoption_steps, resend_unstarted_steps
from adoptions.models import Adoption, IdempotentRequest
from events.context import CommandContext
from events.delivery import deliver
from events.handlers import handlers_for
from events.models import OutboxMessage, StoredEvent
from petstore import chores
from tests.factories import register_pet

pytestmark = pytest.mark.django_db


def test_every_apps_chores_are_found_at_start_up():
    assert {
        "events.chores.recover_stalled_deliveries",
        "events.chores.purge_published_outbox_rows",
        "adoptions.chores.purge_expired_idempotency_keys",
        "adoptions.chores.recount_adoption_steps",
    } <= set(chores.CHORES)


def test_a_failing_chore_is_logged_and_the_others_still_run(monkeypatch, caplog):
    def broken() -> str:
        raise RuntimeError("disk full")

    def working() -> str:
        return "did something"

    monkeypatch.setattr(chores, "CHORES", {"broken": broken, "working": working})

    reports = chores.run_chores()

    assert reports == {"working": "did something"}
    assert "chore broken failed" in caplog.text


def test_idempotency_keys_are_forgotten_after_their_keeping_time(customer_client, pet, shelter, settings):
    settings.IDEMPOTENCY_KEEP_HOURS = 24
    other_pet = register_pet(shelter=shelter, name="Other")
    for key, pet_id in (("old", pet.id), ("new", other_pet.id)):
        customer_client.post(
            "/api/adoptions", {"petId": str(pet_id)}, format="json", HTTP_IDEMPOTENCY_KEY=key
        )
    IdempotentRequest.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))

    reports = chores.run_chores()

    assert set(IdempotentRequest.objects.values_list("key", flat=True)) == {"new"}
    assert "forgot 1 idempotency keys" in reports["adoptions.chores.purge_expired_idempotency_keys"]


def test_keeping_time_zero_keeps_every_answer(customer_client, pet, settings):
    settings.IDEMPOTENCY_KEEP_HOURS = 0
    customer_client.post("/api/adoptions", {"petId": str(pet.id)}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    IdempotentRequest.objects.update(created_at=timezone.now() - timedelta(days=400))

    chores.run_chores()

    assert IdempotentRequest.objects.count() == 1


def test_an_adoption_whose_steps_were_not_all_counted_is_recounted_and_completed(
    pet, customer, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    started = services.pet_adopt(pet_id=pet.id, customer=customer, context=CommandContext.system())
    adoption = Adoption.objects.filter(pk=started.adoption.pk)
    first, *others = handlers_for("PetAdopted")
    for handler in others:
        deliver(handler.name, started.adoption.adopted_event_id)
    # one of them recorded by a worker still running the code from before the count
    adoption.update(steps_succeeded=F("steps_succeeded") - 1)
    deliver(first.name, started.adoption.adopted_event_id)  # the last step: 6 counted of 7
    assert adoption.get().status == "processing"
    assert recount_adoption_steps() is None  # not before a minute has passed
    adoption.update(created_at=timezone.now() - timedelta(minutes=2))

    report = recount_adoption_steps()

    assert (adoption.get().status, adoption.get().steps_succeeded) == ("completed", 7)
    assert StoredEvent.objects.filter(event_type="AdoptionCompleted").count() == 1
    assert report == "recounted 1 adoptions: 1 completed"
    assert recount_adoption_steps() is None  # nothing left to recount


def test_steps_no_worker_started_are_sent_again_once_and_then_complete_the_adoption(
    pet, customer, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    started = services.pet_adopt(pet_id=pet.id, customer=customer, context=CommandContext.system())
    event_id = started.adoption.adopted_event_id
    adoption = Adoption.objects.filter(pk=started.adoption.pk)
    *ran, lost_one, lost_two = handlers_for("PetAdopted")
    for handler in ran:  # the other two tasks vanished (say, an old worker discarded them)
        deliver(handler.name, event_id)
    resent = OutboxMessage.objects.exclude(handler="")

    assert resend_unstarted_steps() is None  # begun a moment ago: its tasks may still be queued
    adoption.update(created_at=timezone.now() - timedelta(minutes=20))
    assert resend_unstarted_steps() is None  # the relay has not published the event yet
    OutboxMessage.objects.update(published_at=timezone.now())

    assert resend_unstarted_steps() == "sent 2 steps again that no worker had started"
    assert sorted(resent.values_list("handler", flat=True)) == sorted([lost_one.name, lost_two.name])
    assert resend_unstarted_steps() is None  # once per ADOPTION_STEP_RESEND_MINUTES

    for row in resent:  # a worker runs them: the adoption completes
        deliver(row.handler, event_id)
    assert adoption.get().status == "completed"
    resent.update(created_at=timezone.now() - timedelta(minutes=30))
    assert resend_unstarted_steps() is None  # nothing missing any more


def test_an_adoption_from_before_adoptions_named_their_event_is_left_alone(pet, customer):
    started = services.pet_adopt(pet_id=pet.id, customer=customer, context=CommandContext.system())
    OutboxMessage.objects.update(published_at=timezone.now())
    Adoption.objects.filter(pk=started.adoption.pk).update(
        adopted_event_id=None, created_at=timezone.now() - timedelta(hours=1)
    )

    assert resend_unstarted_steps() is None  # nothing to send it against, and no error
    assert not OutboxMessage.objects.exclude(handler="").exists()
