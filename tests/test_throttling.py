"""API rate limits: per user and per anonymous client, 429 with Retry-After, counted in the cache."""

import os
import threading
import time
import uuid

import pytest
from rest_framework.test import APIClient, APIRequestFactory

from petstore.throttling import UserRateThrottle, WindowCounterMixin
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

AVAILABLE_PETS = "/api/queries/available-pets"


@pytest.fixture
def rates(settings, monkeypatch):
    """Set the rates for this test (its counters are its own: see _own_cache_namespace).

    The throttles' clock stands still mid-minute: windows are aligned to the clock, and a test
    whose requests straddled a minute boundary would see them counted in two windows.
    """
    mid_minute = time.time() // 60 * 60 + 30
    monkeypatch.setattr(WindowCounterMixin, "timer", staticmethod(lambda: mid_minute), raising=False)

    def set_rates(*, anon: str = "100000/minute", user: str = "100000/minute") -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"anon": anon, "user": user},
        }

    return set_rates


def anonymous_client() -> APIClient:
    return APIClient(REMOTE_ADDR=f"10.{uuid.uuid4().int % 250}.0.{uuid.uuid4().int % 250}")


def assert_throttled(response) -> None:
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "throttled" and error["message"] and error["details"] == {}


def test_anonymous_client_over_its_rate_gets_429_with_retry_after(rates):
    rates(anon="2/minute")
    client = anonymous_client()

    statuses = [client.get(AVAILABLE_PETS).status_code for _ in range(2)]
    third = client.get(AVAILABLE_PETS)

    assert statuses == [200, 200]
    assert_throttled(third)
    assert anonymous_client().get(AVAILABLE_PETS).status_code == 200  # another address


def test_user_over_its_rate_gets_429_and_other_users_are_not_affected(rates, customer_client, other_customer):
    rates(user="3/minute")
    client = customer_client

    statuses = [client.get(AVAILABLE_PETS).status_code for _ in range(3)]
    fourth = client.get(AVAILABLE_PETS)

    assert statuses == [200, 200, 200]
    assert_throttled(fourth)
    assert client_for(other_customer.user).get(AVAILABLE_PETS).status_code == 200


def test_commands_are_throttled_too_and_nothing_is_written(rates, staff_client, shelter):
    rates(user="1/minute")
    body = {"name": "Nova", "species": "dog", "age": 3, "shelterId": str(shelter.id)}

    first = staff_client.post("/api/commands/register-pet", body, format="json")
    second = staff_client.post("/api/commands/register-pet", body, format="json")

    assert first.status_code == 201
    assert_throttled(second)
    assert shelter.pets.count() == 1


def test_signed_in_users_are_counted_by_user_not_by_the_anonymous_rate(rates, customer_client):
    rates(anon="1/minute", user="100/minute")
    client = customer_client

    assert [client.get(AVAILABLE_PETS).status_code for _ in range(3)] == [200, 200, 200]


def test_a_rate_set_to_off_switches_that_throttle_off(rates):
    rates(anon="off")
    client = anonymous_client()

    assert {client.get(AVAILABLE_PETS).status_code for _ in range(5)} == {200}


def test_concurrent_requests_are_counted_exactly(rates, customer):
    """The counter is one atomic increment: 20 racing requests against a limit of 10 let 10 in."""
    rates(user="10/minute")
    request = APIRequestFactory().get(AVAILABLE_PETS)
    request.user = customer.user
    allowed, barrier = [], threading.Barrier(20)

    def one_request():
        barrier.wait()
        allowed.append(UserRateThrottle().allow_request(request, view=None))

    threads = [threading.Thread(target=one_request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert allowed.count(True) == 10


def test_counters_live_in_redis_when_redis_url_is_set(settings):
    expected = "RedisCache" if os.environ.get("REDIS_URL") else "LocMemCache"

    assert settings.CACHES["default"]["BACKEND"].endswith(expected)


def test_a_forged_x_forwarded_for_does_not_escape_the_anonymous_limit(rates, settings):
    """Behind one proxy (production's NUM_PROXIES=1) a client is the address the proxy appended;
    what the client wrote into X-Forwarded-For itself does not make it someone new."""
    rates(anon="2/minute")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient(REMOTE_ADDR="10.0.0.1")  # the proxy

    def through_the_proxy(forged: str, client_address: str):
        return client.get(AVAILABLE_PETS, HTTP_X_FORWARDED_FOR=f"{forged}, {client_address}")

    statuses = [through_the_proxy(f"198.51.100.{n}", "203.0.113.7").status_code for n in range(2)]
    third = through_the_proxy("198.51.100.99", "203.0.113.7")

    assert statuses == [200, 200]
    assert_throttled(third)
    assert through_the_proxy("198.51.100.99", "203.0.113.8").status_code == 200  # another client


def test_with_no_proxy_in_front_x_forwarded_for_is_ignored(rates, settings):
    """The default (no proxy, as `make run` serves): the client is the socket's address, so
    writing any X-Forwarded-For does not escape the anonymous limit."""
    rates(anon="2/minute")
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0
    client = APIClient(REMOTE_ADDR="203.0.113.7")

    statuses = [
        client.get(AVAILABLE_PETS, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(2)
    ]
    third = client.get(AVAILABLE_PETS, HTTP_X_FORWARDED_FOR="198.51.100.99")

    assert statuses == [200, 200]
    assert_throttled(third)
