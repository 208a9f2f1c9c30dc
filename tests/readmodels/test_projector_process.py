"""Kill -9 the real projector process mid-batch: it resumes and equals a full rebuild."""

import os
import signal
import sys
import time
import uuid

import pytest
from django.db import transaction

from adoptions import pets
from adoptions.domain import Pet
from events.context import CommandContext
from readmodels.models import PetListing
from readmodels.projections import available_pets
from readmodels.projector import lag, rebuild, state_of
from tests.readmodels.conftest import project
from tests.support.processes import child_env, start, stop

pytestmark = pytest.mark.django_db(transaction=True)


def record_history(count: int, shelter) -> None:
    """Register pets and adopt every third one, straight through the repository (fast)."""
    meta = CommandContext.system().as_metadata()
    for i in range(count):
        with transaction.atomic():
            pet = Pet.register(pet_id=uuid.uuid4(), name=f"P{i}", species="cat", age=1, shelter_id=shelter.id)
            if i % 3 == 0:
                pet.adopt(adoption_id=uuid.uuid4(), customer_id=uuid.uuid4())
            pets.save(pet, metadata=meta, expected_version=0)


def listings() -> list[tuple]:
    gen = state_of("available_pets").generation
    return sorted(PetListing.objects.filter(generation=gen).values_list("pet_id", "name", "available"))


def test_projector_killed_mid_batch_resumes_from_its_checkpoint(require_postgres, shelter, tmp_path):
    record_history(1500, shelter)
    projector = start(
        [sys.executable, "manage.py", "run_projections"],
        env=child_env(PROJECTION_BATCH_SIZE="10"),  # 150 checkpoints: a wide window for the kill
        log=tmp_path / "projector.log",
    )
    try:
        deadline = time.monotonic() + 60
        while state_of("available_pets").position == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(projector.pid, signal.SIGKILL)  # somewhere in the middle of a batch
        projector.wait(10)
    finally:
        stop(projector)

    killed_at = state_of("available_pets")
    assert 0 < killed_at.events_applied, (tmp_path / "projector.log").read_text()
    assert lag("available_pets").events > 0, "the projector finished before the kill; use more events"
    gen = killed_at.generation
    assert PetListing.objects.filter(generation=gen).count() <= killed_at.events_applied

    project(timeout=60)  # restart: catch up from the checkpoint
    resumed = listings()
    rebuild(available_pets)

    assert resumed == listings()
    assert len(resumed) == 1500 and sum(1 for row in resumed if not row[2]) == 500
