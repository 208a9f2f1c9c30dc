"""Operators see projections in the admin; shelter staff do not."""

import pytest
from django.contrib.auth import get_user_model

from readmodels.projector import state_of

pytestmark = pytest.mark.django_db


def test_superuser_sees_projection_positions_and_states(client):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")
    state_of("available_pets")
    client.force_login(admin)

    page = client.get("/admin/readmodels/projectionstate/")

    assert page.status_code == 200 and b"available_pets" in page.content


def test_staff_cannot_open_projections(client, staff):
    client.force_login(staff)
    assert client.get("/admin/readmodels/projectionstate/").status_code == 403
