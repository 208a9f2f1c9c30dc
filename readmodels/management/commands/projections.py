"""List projections with their checkpoint, lag and state; reset or resume one."""

from django.core.management.base import BaseCommand, CommandError

from readmodels import projector
from readmodels.models import ProjectionDeadLetter
from readmodels.projector import PROJECTIONS, lag, state_of


class Command(BaseCommand):
    help = "Show each projection's position, lag and state (--reset, --resume, --dead-letters NAME)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset", metavar="NAME", help="forget the projection: it rebuilds from the start"
        )
        parser.add_argument("--resume", metavar="NAME", help="retry a stopped projection's failing event")
        parser.add_argument(
            "--dead-letters", metavar="NAME", help="list the events the projection skipped (dead-lettered)"
        )

    def handle(self, *args, reset=None, resume=None, dead_letters=None, **options):
        for name in filter(None, (reset, resume, dead_letters)):
            if name not in PROJECTIONS:
                raise CommandError(f"unknown projection {name!r}; known: {', '.join(PROJECTIONS)}")
        if reset:
            projector.reset(reset)
            self.stdout.write(f"{reset} reset: it will catch up from the first event")
        if resume:
            projector.resume(resume)
            self.stdout.write(f"{resume} resumed")
        if dead_letters:
            return self._dead_letters(dead_letters)
        self._table()

    def _dead_letters(self, name: str) -> None:
        skipped = ProjectionDeadLetter.objects.filter(projection=name).order_by("position")
        for dead in skipped:
            self.stdout.write(f"#{dead.position:<9} {dead.event_type:<16} {dead.event_id}  {dead.error}")
        self.stdout.write(
            f"{len(skipped)} event(s) skipped by {name}. After the fix, "
            f"`manage.py replay_events --projection {name}` rebuilds it, trying each in its place;"
            " those that apply then leave this list."
        )

    def _table(self):
        header = f"{'projection':<20} {'position':>9} {'behind':>7} {'lag s':>8} {'gen':>4}  state"
        self.stdout.write(header)
        for name in PROJECTIONS:
            state = state_of(name)
            behind = lag(name, state=state)
            dead = ProjectionDeadLetter.objects.filter(projection=name).count()
            status = state.status + (f" at #{state.error_position}: {state.error}" if state.error else "")
            if state.rebuild_generation:
                status += f" (rebuilding gen {state.rebuild_generation} at #{state.rebuild_position})"
            if dead:
                status += f" ({dead} dead-lettered)"
            self.stdout.write(
                f"{name:<20} {state.position:>9} {behind.events:>7} {behind.seconds:>8.1f} "
                f"{state.generation:>4}  {status}"
            )
