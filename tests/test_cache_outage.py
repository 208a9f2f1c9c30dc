"""Redis down: the rate limits and the staff-login counts it keeps pause; nothing else stops."""

import pytest
from django.urls import reverse

from adoptions.models import Adoption
from tests.support.tcp_proxy import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_down(settings):
    """The cache is a Redis server nobody listens for (connections refused at once)."""
    port = free_port()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "1/minute", "user": "1/minute"},
    }


def test_adoptions_and_queries_go_on_while_the_cache_is_down(redis_down, customer_client, api_client, pet):
    adopted = customer_client.post("/api/adoptions", {"petId": str(pet.id)}, format="json")
    queries = [api_client.get("/api/queries/available-pets").status_code for _ in range(3)]

    assert adopted.status_code == 202, adopted.content
    assert Adoption.objects.filter(id=adopted.json()["adoptionId"]).exists()
    assert queries == [200, 200, 200]  # over the 1/minute limit: not counted while Redis is down


def test_staff_can_log_in_while_the_cache_is_down(redis_down, client, staff, settings):
    form = {"username": staff.username, "password": "pass-for-tests"}
    wrong = [client.post(reverse("admin:login"), {**form, "password": "wrong"}) for _ in range(6)]
    right = client.post(reverse("admin:login"), form)

    assert {response.status_code for response in wrong} == {200}  # refused, and not counted
    assert right.status_code == 302
