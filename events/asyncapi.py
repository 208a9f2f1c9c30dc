"""The AsyncAPI 3.0 document, generated from the event catalogue and the handler registry.

Nothing here is written by hand twice: channels, messages and payload schemas come from the
declarations in events/catalogue.py, the receive operations from events/handlers.py, the AMQP
server from settings.
"""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from .catalogue import EVENT_TYPES, MESSAGE_TYPES, Message
from .handlers import handlers_for

HEADERS_SCHEMA = {
    "type": "object",
    "required": ["event-type", "event-id", "timestamp"],
    "properties": {
        "event-type": {"type": "string", "description": "Message name, e.g. PetAdopted"},
        "event-id": {"type": "string", "format": "uuid", "description": "Also the AMQP message id"},
        "timestamp": {"type": "string", "format": "date-time", "description": "When it was recorded"},
        "stream-id": {"type": "string", "format": "uuid", "description": "The pet or adoption"},
        "stream-version": {"type": "integer", "minimum": 1},
        "position": {"type": "integer", "minimum": 1, "description": "Global position in the log"},
        "schema-version": {"type": "integer", "minimum": 1},
        "correlation-id": {"type": "string"},
        "causation-id": {"type": ["string", "null"]},
    },
}


def _operation_id(handler_name: str) -> str:
    """adoptions.vet_appointment -> adoptionsVetAppointment."""
    return _camel("".join(part.title() for part in re.split(r"[._]", handler_name)))


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _title(name: str) -> str:
    return " ".join(re.findall(r"[A-Z][a-z]*", name)) + " Event"


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Resolve pydantic's local $defs (a payload must not point into the document root)."""
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return resolve(copy.deepcopy(defs[node["$ref"].removeprefix("#/$defs/")]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def payload_schema(message_type: type[Message]) -> dict[str, Any]:
    """The published payload's schema; consumers must accept fields added later."""
    schema = _inline(message_type.wire_schema())
    schema.pop("additionalProperties", None)
    return schema


def _amqp_server() -> dict[str, Any]:
    url = urlsplit(settings.CELERY_BROKER_URL)
    if url.scheme not in ("amqp", "pyamqp", "amqps"):
        host, vhost = "localhost:5672", "/"
    else:
        host = f"{url.hostname or 'localhost'}:{url.port or 5672}"
        vhost = url.path[1:] or "/"
    return {
        "host": host,
        "pathname": "/" if vhost == "/" else f"/{vhost}",
        "protocol": "amqp",
        "protocolVersion": "0.9.1",
        "description": f"RabbitMQ: topic exchange {settings.EVENTS_EXCHANGE}, routing key = channel address",
    }


def _channel(message_type: type[Message]) -> dict[str, Any]:
    name = message_type.message_name
    return {
        "address": message_type.channel,
        "title": name,
        "description": f"Published when: {message_type.summary.lower() or name}",
        "messages": {f"{_camel(name)}Message": {"$ref": f"#/components/messages/{name}"}},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": settings.EVENTS_EXCHANGE,
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "bindingVersion": "0.3.0",
            }
        },
    }


def _message(message_type: type[Message]) -> dict[str, Any]:
    name = message_type.message_name
    declared = EVENT_TYPES.get(name)
    message = {
        "name": name,
        "title": _title(name),
        "contentType": "application/json",
        "payload": payload_schema(message_type),
        "headers": copy.deepcopy(HEADERS_SCHEMA),
        "correlationId": {"location": "$message.header#/correlation-id"},
        "bindings": {"amqp": {"messageType": name, "bindingVersion": "0.3.0"}},
    }
    if message_type.summary:
        message["summary"] = message_type.summary
    if declared is not None:
        message["x-schema-version"] = declared.version
        message["x-stored-as"] = {"streamType": declared.stream_type, "eventType": name}
    return message


def _operations(channels: dict[str, type[Message]]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for channel_id, message_type in channels.items():
        name = message_type.message_name
        reference = {"$ref": f"#/channels/{channel_id}"}
        message_ref = {"$ref": f"#/channels/{channel_id}/messages/{_camel(name)}Message"}
        operations[f"publish{name}"] = {
            "action": "send",
            "channel": reference,
            "messages": [message_ref],
            "summary": f"The outbox relay publishes {name} with publisher confirms",
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}},
        }
        operations[f"subscribe{name}"] = {
            "action": "receive",
            "channel": reference,
            "messages": [message_ref],
            "summary": f"Any service may bind a queue to {message_type.channel}",
        }
        for handler in handlers_for(name):
            operations[_operation_id(handler.name)] = {
                "action": "receive",
                "channel": reference,
                "messages": [message_ref],
                "summary": f"Celery task {handler.name} on queue {handler.queue}",
            }
    return operations


def document() -> dict[str, Any]:
    """Build the whole AsyncAPI 3.0 document."""
    channels = {_camel(name): message_type for name, message_type in MESSAGE_TYPES.items()}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "PetStore Event API",
            "version": "1.0.0",
            "description": (
                "Event-driven API for PetStore operations. Every event is recorded in an append-only "
                "log and published through a transactional outbox; payloads are camelCase JSON."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": _amqp_server(),
            "production": {
                "host": "kafka.petstore.com:9092",
                "protocol": "kafka",
                "description": (
                    "Production Kafka cluster (documented mapping, not run here): one topic per "
                    "channel address, key = petId or adoptionId, the same headers."
                ),
            },
        },
        "channels": {channel_id: _channel(m) for channel_id, m in channels.items()},
        "operations": _operations(channels),
        "components": {"messages": {m.message_name: _message(m) for m in channels.values()}},
    }
