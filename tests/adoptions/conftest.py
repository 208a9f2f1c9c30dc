"""Fixtures shared by the staff console's tests."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from tests.factories import shelter_staff_group


@pytest.fixture
def staff_group(db) -> Group:
    """The group seed_demo gives shelter staff, with exactly its permissions."""
    return shelter_staff_group()
