"""Print the event stream's messages from an offset, a time or an interval ago, one JSON line each."""

import itertools
import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from events.stream import StreamUnavailable, check_offset, read_stream


class Command(BaseCommand):
    help = "Read petstore.events.stream (RabbitMQ) from where you say; new messages only by default."

    def add_arguments(self, parser):
        start = parser.add_mutually_exclusive_group()
        start.add_argument("--from", dest="interval", help="an interval back from now: 24h, 7D, 30m")
        start.add_argument("--offset", type=int, help="the first offset to read (0 is the oldest kept)")
        start.add_argument("--from-beginning", action="store_true", help="everything the stream keeps")
        start.add_argument("--from-time", type=datetime.fromisoformat, help="ISO time with zone, e.g. …Z")
        parser.add_argument("--type", action="append", dest="types", help="a routing key, e.g. pet.adopted")
        parser.add_argument("--limit", type=int, help="stop after this many messages")
        parser.add_argument("--follow", action="store_true", help="keep waiting for new messages")

    def handle(self, *args, types=None, limit=None, follow=False, **options):
        try:
            offset = check_offset(offset_of(options))
        except ValueError as error:
            raise CommandError(str(error)) from error
        messages = read_stream(offset, routing_keys=set(types or ()), follow=follow)
        try:
            for message in itertools.islice(messages, limit):
                self.stdout.write(json.dumps(message.as_json(), separators=(",", ":")))
                self.stdout.flush()
        except StreamUnavailable as error:
            raise CommandError(str(error)) from error
        except KeyboardInterrupt:  # the way out of --follow
            pass


def offset_of(options: dict):
    """Turn the one start option given into an x-stream-offset value ("next" when none is)."""
    if options["from_beginning"]:
        return "first"
    if options["offset"] is not None:
        return options["offset"]
    if options["from_time"] is not None:
        return options["from_time"]
    return options["interval"] or "next"
