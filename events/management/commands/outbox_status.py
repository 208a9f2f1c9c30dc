"""Show the outbox backlog and what sits in the broker's unrouted queue."""

import json

from django.conf import settings
from django.core.management.base import BaseCommand

from events import outbox
from events.broker import CONNECTION_ERRORS, broker_connection, declare_topology, unrouted_queue


class Command(BaseCommand):
    help = "Print pending outbox messages, the oldest one's age, and unrouted broker messages."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, as_json: bool = False, **options):
        backlog = outbox.backlog()
        status = {
            "pending": backlog.pending,
            "oldestPendingAgeSeconds": round(backlog.oldest_age_seconds, 3),
            "unrouted": self._unrouted_count(),
            "broker": settings.CELERY_BROKER_URL.split("@")[-1],
        }
        if as_json:
            self.stdout.write(json.dumps(status))
            return
        for key, value in status.items():
            self.stdout.write(f"{key:>26}: {value}")

    def _unrouted_count(self) -> int | None:
        """Messages waiting in petstore.unrouted, or None when the broker cannot be asked."""
        try:
            with broker_connection() as conn:
                channel = conn.channel()
                declare_topology(channel)
                return unrouted_queue()(channel).queue_declare(passive=True).message_count
        except CONNECTION_ERRORS:
            return None
