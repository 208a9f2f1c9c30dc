"""Print the event log as JSON lines, for debugging."""

import json
import uuid

from django.core.management.base import BaseCommand

from events.catalogue import EVENT_TYPES, upcast
from events.models import StoredEvent
from readmodels.management.commands.replay_events import moment


class Command(BaseCommand):
    help = "Print events as JSON lines: --stream ID, --since 24h|ISO, --type PetAdopted, --limit N (0: all)."

    def add_arguments(self, parser):
        parser.add_argument("--stream", type=uuid.UUID)
        parser.add_argument("--since")
        parser.add_argument("--type", dest="event_type")
        parser.add_argument("--limit", type=int, default=1000, help="at most this many events (0: all)")

    def handle(self, *args, stream=None, since=None, event_type=None, limit=1000, **options):
        events = StoredEvent.objects.order_by("position")
        if stream:
            events = events.filter(stream_id=stream)
        if since:
            events = events.filter(recorded_at__gte=moment(since))
        if event_type:
            events = events.filter(event_type=event_type)
        printed = 0
        for event in (events[:limit] if limit > 0 else events).iterator(chunk_size=1000):
            printed += 1
            self.stdout.write(
                json.dumps(
                    {
                        "position": event.position,
                        "eventId": str(event.event_id),
                        "type": event.event_type,
                        "streamType": event.stream_type,
                        "streamId": str(event.stream_id),
                        "version": event.stream_version,
                        "schemaVersion": EVENT_TYPES[event.event_type].version,  # that of `data`
                        "storedSchemaVersion": event.schema_version,
                        "data": upcast(event.event_type, event.schema_version, event.payload),
                        "metadata": event.metadata,
                        "recordedAt": event.recorded_at.isoformat(),
                    }
                )
            )
        if limit > 0 and printed == limit and events[limit : limit + 1].exists():
            # On stderr: the JSON lines on stdout stay clean for a pipe.
            self.stderr.write(f"stopped after {limit} events; --limit N for more, --limit 0 for all")
