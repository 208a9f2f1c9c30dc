"""Record each message's payload schema per version in events/schema_lock/; refuse breaking changes."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from events import schema_lock
from events.compatibility import breaking_changes


class Command(BaseCommand):
    help = (
        "Write the lock file of every new message version and of compatible changes (optional "
        "fields added); refuse a breaking change, which needs a new version and an upcaster."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="write nothing; fail if the gate fails")
        parser.add_argument("--dir", type=Path, default=schema_lock.LOCK_DIR, help="the lock directory")

    def handle(self, *args, **options):
        directory = options["dir"]
        if not options["check"]:
            self.record(directory)
        problems = schema_lock.check(directory)
        if problems:
            raise CommandError("the schema gate fails:\n  " + "\n  ".join(problems))
        self.stdout.write(f"every message schema matches its lock in {directory}")

    def record(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        locked = schema_lock.locked_schemas(directory)
        for key, schema in sorted(schema_lock.current_schemas().items()):
            if key in locked and (locked[key] == schema or breaking_changes(locked[key], schema)):
                continue  # unchanged, or breaking: the check then says so, and nothing is overwritten
            self.stdout.write(f"wrote {schema_lock.write_lock(key, schema, directory)}")
