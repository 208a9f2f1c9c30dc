"""Give dead handler deliveries a fresh set of attempts."""

import uuid

from django.core.management.base import BaseCommand, CommandError

from events.delivery import redrive
from events.handlers import HANDLERS


class Command(BaseCommand):
    help = "Redrive dead deliveries, optionally only one handler's or one event's."

    def add_arguments(self, parser):
        parser.add_argument("--handler", help=f"one of: {', '.join(sorted(HANDLERS))}")
        parser.add_argument("--event-id", type=uuid.UUID)

    def handle(self, *args, handler=None, event_id=None, **options):
        if handler and handler not in HANDLERS:
            raise CommandError(f"unknown handler {handler!r}; known: {', '.join(sorted(HANDLERS))}")
        count = redrive(handler=handler, event_id=event_id)
        self.stdout.write(f"redriven {count} dead deliveries")
