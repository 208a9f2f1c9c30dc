"""Rebuild a projection from the event log, or re-apply it from a point in history."""

import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from events.models import StoredEvent
from events.store import LogPosition
from readmodels.projector import PROJECTIONS, ProjectionFailed, rebuild, replay_from

RELATIVE = re.compile(r"^(\d+)([smhdD])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "D": "days"}  # D: as consume_stream


def moment(text: str):
    """Parse an ISO time or a span back from now (90s, 15m, 24h, 7d or 7D)."""
    if match := RELATIVE.match(text):
        return timezone.now() - timedelta(**{UNITS[match[2]]: int(match[1])})
    parsed = parse_datetime(text)
    if parsed is None:
        raise CommandError(f"--since takes an ISO time or a span like 24h, not {text!r}")
    return parsed


class Command(BaseCommand):
    help = (
        "Rebuild a projection into fresh tables and swap them in atomically (queries keep "
        "answering); with --from-position or --since, re-apply events from there instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("--projection", required=True, help=f"one of: {', '.join(PROJECTIONS)}")
        start = parser.add_mutually_exclusive_group()
        start.add_argument("--from-position", type=int, help="re-apply events from this position on")
        start.add_argument("--since", help="re-apply events recorded since (ISO time, or 90s/15m/24h/7d)")
        parser.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args, projection, from_position=None, since=None, batch_size=5000, **options):
        if projection not in PROJECTIONS:
            raise CommandError(f"unknown projection {projection!r}; known: {', '.join(PROJECTIONS)}")
        target = PROJECTIONS[projection]
        try:
            if from_position is None and since is None:
                progress = self._progress(StoredEvent.objects.count())
                replayed = rebuild(target, batch_size=batch_size, progress=progress)
                after_bar = "\n" if progress else ""
                self.stdout.write(f"{after_bar}rebuilt {projection} from {replayed} events and swapped it in")
                return
            after = self._start(from_position, since)
            replayed = replay_from(target, after=after, batch_size=batch_size)
        except ProjectionFailed as failure:
            go_on = (
                "run the command again: the rebuild goes on from where it stopped"
                if from_position is None and since is None
                else f"go on with --from-position {failure.row.position}"
            )
            raise CommandError(
                f"{projection} stopped on {failure}. What was replayed before it is kept;"
                f" fix the projection, then {go_on}."
            ) from None
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"re-applied {replayed} events to {projection}")

    def _start(self, from_position, since) -> LogPosition:
        """The reader position just before the first event (in reader order) to re-apply."""
        events = StoredEvent.objects.order_by("transaction_id", "position")
        if since is not None:
            events = events.filter(recorded_at__gte=moment(since))
        else:
            events = events.filter(position__gte=from_position)
        first = events.first()
        if first is None:
            return LogPosition(2**62, 0)  # nothing from there on: nothing to re-apply
        return LogPosition(first.transaction_id, first.position - 1)

    def _progress(self, total: int):
        if not self.stdout.isatty():  # a bar only on a terminal, not in logs or pipes
            return None

        def show(done: int, position: int) -> None:
            width = 40
            filled = int(width * min(done, total) / total) if total else width
            self.stdout.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} events", ending="")
            self.stdout.flush()

        return show
