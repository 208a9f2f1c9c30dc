"""The relay's housekeeping: every app's chores run, one failing never stops the others."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from adoptions.models import IdempotentRequest
from petstore import chores
from tests.factories import register_pet

pytestmark = pytest.mark.django_db


def test_every_apps_chores_are_found_at_start_up():
    assert {
        "events.chores.recover_stalled_deliveries",
        "events.chores.purge_published_outbox_rows",
        "adoptions.chores.purge_expired_idempotency_keys",
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
