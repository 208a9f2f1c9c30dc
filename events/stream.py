"""Read the replayable event stream (`petstore.events.stream`) from an offset of the reader's choice.

A RabbitMQ stream keeps every message until its retention (`x-max-age`) drops it; reading
deletes nothing. Over AMQP 0.9.1 the broker does not remember where a reader stopped: each
delivery carries its offset in the `x-stream-offset` header and the reader stores it (a
projector with its writes, in one transaction) and resubscribes from `last_offset + 1`.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import kombu
from django.conf import settings

from .broker import broker_connection, is_rabbitmq

#: An interval back from now, in x-max-age syntax ("24h", "7D", "30m"); a bare number is not one.
INTERVAL = re.compile(r"\d+[YMDhms]")
#: What `x-stream-offset` accepts: "first" | "last" | "next", an offset, a time, or an interval.
OffsetSpec = str | int | datetime


class StreamUnavailable(Exception):
    """The broker has no stream to read (the embedded broker, or a stream not declared yet)."""


@dataclass(frozen=True)
class StreamMessage:
    offset: int
    routing_key: str
    event_type: str
    event_id: str
    timestamp: str
    payload: dict

    def as_json(self) -> dict:
        return {
            "offset": self.offset,
            "routingKey": self.routing_key,
            "eventType": self.event_type,
            "eventId": self.event_id,
            "timestamp": self.timestamp,
            "payload": self.payload,
        }


def check_offset(offset: OffsetSpec) -> OffsetSpec:
    """Refuse what the broker would refuse, with a clearer message than a closed channel."""
    if isinstance(offset, datetime) and offset.tzinfo is None:
        raise ValueError("a start time needs a time zone (a naive one would be read as UTC)")
    if isinstance(offset, int) and offset < 0:
        raise ValueError("an offset is 0 or more")
    if isinstance(offset, str) and re.fullmatch(r"\d+d", offset):
        offset = offset.upper()  # 7d as replay_events and events take it: RabbitMQ spells days D
    if isinstance(offset, str) and offset not in ("first", "last", "next") and not INTERVAL.fullmatch(offset):
        raise ValueError(f"{offset!r} is not first, last, next or an interval like 24h, 7D, 30m")
    return offset


def read_stream(
    offset: OffsetSpec = "next",
    *,
    routing_keys: set[str] | None = None,
    follow: bool = False,
    idle_seconds: float = 2.0,
    prefetch: int = 100,
    url: str | None = None,
) -> Iterator[StreamMessage]:
    """Yield the stream's messages from `offset` on; without `follow`, stop once it goes quiet."""
    url = url or settings.CELERY_BROKER_URL
    if not is_rabbitmq(url):
        raise StreamUnavailable("the event stream needs RabbitMQ (CELERY_BROKER_URL=amqp://…)")
    arrived: deque[kombu.Message] = deque()
    arguments = {"x-stream-offset": check_offset(offset)}
    # Readers do not declare the stream: the relay's topology (or setup_broker) owns it.
    queue = kombu.Queue(settings.EVENTS_STREAM_NAME, no_declare=True, consumer_arguments=arguments)
    with broker_connection(url) as conn:
        channel = conn.channel()
        # The broker refuses a stream consumer without a prefetch or with automatic acks.
        consumer = kombu.Consumer(channel, [queue], no_ack=False, on_message=arrived.append)
        consumer.qos(prefetch_count=prefetch)
        try:
            consumer.consume()
        except conn.channel_errors as error:
            hint = "the relay declares it, or `manage.py setup_broker`"
            raise StreamUnavailable(f"cannot read {queue.name} ({hint}): {error}") from error
        quiet_since = time.monotonic()
        while follow or time.monotonic() - quiet_since < idle_seconds:
            while arrived:
                message = arrived.popleft()
                if not routing_keys or message.delivery_info["routing_key"] in routing_keys:
                    yield stream_message(message)
                message.ack()  # only gives credit back: a stream deletes nothing on ack
                quiet_since = time.monotonic()
            _drain(conn, timeout=min(1.0, idle_seconds))


def _drain(conn: kombu.Connection, *, timeout: float) -> None:
    """Wait up to `timeout` for deliveries, keeping the connection's heartbeats going."""
    try:
        conn.drain_events(timeout=timeout)
    except TimeoutError:  # socket.timeout: nothing arrived
        conn.heartbeat_check()


def stream_message(message: kombu.Message) -> StreamMessage:
    headers = message.headers
    return StreamMessage(
        offset=headers["x-stream-offset"],
        routing_key=message.delivery_info["routing_key"],
        event_type=headers.get("event-type", ""),
        event_id=headers.get("event-id", ""),
        timestamp=headers.get("timestamp", ""),
        payload=json.loads(message.body),
    )
