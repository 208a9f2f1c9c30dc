"""Keep the read models up to date (the Procfile's `projector`)."""

import signal
import threading

from django.core.management.base import BaseCommand

from readmodels.runner import catch_up_all, run_forever


class Command(BaseCommand):
    help = "Follow the event log into every projection's tables until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="catch up once, then exit")

    def handle(self, *args, once: bool = False, **options):
        if once:
            self.stdout.write(f"read {catch_up_all()} events")
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        run_forever(stop)
