"""Publish outbox messages to the broker until stopped (the Procfile's `relay`)."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from events.relay import Relay
from petstore.priority import run_behind_requests


class Command(BaseCommand):
    help = "Relay outbox messages to RabbitMQ (petstore.events) with publisher confirms."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="publish what is due, then exit")
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args, once: bool, batch_size: int | None, **options):
        run_behind_requests(settings.RELAY_NICE)  # as the worker does (WORKER_NICE)
        relay = Relay(batch_size=batch_size)
        if once:
            sent = relay.drain()
            relay.publisher.close()
            self.stdout.write(f"published {sent} messages")
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        relay.run_forever(stop)
