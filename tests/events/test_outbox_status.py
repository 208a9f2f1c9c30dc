"""Operators see the outbox backlog from the command line."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from tests.factories import register_pet

pytestmark = pytest.mark.django_db


def test_outbox_status_counts_pending_messages(shelter):
    register_pet(shelter=shelter)  # PetRegistered + PetAvailable
    out = StringIO()

    call_command("outbox_status", "--json", stdout=out)

    status = json.loads(out.getvalue())
    assert status["pending"] == 2
    assert status["oldestPendingAgeSeconds"] >= 0
