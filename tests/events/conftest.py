"""Fixtures for the relay tests: a queue and a stream of the test's own, a proxy in front of RabbitMQ."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import kombu
import pytest

from events.broker import broker_connection
from events.relay import Relay
from tests.support.rabbit import bind_queue, delete_queue
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def events_queue(broker):
    """A durable queue bound to petstore.events for `pet.#`, deleted after the test."""
    name = f"test.pets.{uuid.uuid4().hex[:8]}"
    bind_queue(broker, name, "pet.#")
    yield name
    delete_queue(broker, name)


@pytest.fixture
def make_relay():
    """Build relays whose broker connections are closed after the test, pass or fail."""
    made: list[Relay] = []

    def make(publisher=None, **options) -> Relay:
        relay = Relay(publisher, **options)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        relay.publisher.close()


@pytest.fixture
def broker_proxy(broker):
    """A TCP proxy in front of the session's RabbitMQ that the test may cut off and restore."""
    upstream = urlsplit(broker)
    proxy = TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 5672)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def event_stream(broker, settings):
    """A stream and fanout exchange of the test's own, declared by the relay, deleted after."""
    suffix = uuid.uuid4().hex[:8]
    settings.EVENTS_STREAM_ENABLED = True
    settings.EVENTS_STREAM_NAME = f"test.stream.{suffix}"
    settings.EVENTS_STREAM_EXCHANGE = f"test.log.{suffix}"
    yield settings.EVENTS_STREAM_NAME
    with broker_connection(broker) as conn:
        channel = conn.channel()
        kombu.Queue(settings.EVENTS_STREAM_NAME)(channel).delete()
        kombu.Exchange(settings.EVENTS_STREAM_EXCHANGE)(channel).delete()
