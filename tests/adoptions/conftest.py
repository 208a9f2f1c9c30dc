"""Fixtures shared by the staff console's tests."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from adoptions.management.commands.seed_demo import STAFF_GROUP, STAFF_PERMISSIONS


@pytest.fixture
def staff_group(db) -> Group:
    """The group seed_demo gives shelter staff, with exactly its permissions."""
    group = Group.objects.create(name=STAFF_GROUP)
    for app_label, codename in STAFF_PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group
