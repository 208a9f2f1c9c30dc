"""Write the AsyncAPI document generated from the event catalogue."""

import json
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand

from events.asyncapi import document


class Command(BaseCommand):
    help = "Print or write the AsyncAPI 3.0 document (YAML, or JSON when the file ends in .json)."

    def add_arguments(self, parser):
        parser.add_argument("--output", type=Path, help="file to write (default: standard output)")

    def handle(self, *args, output: Path | None = None, **options):
        doc = document()
        if output is not None and output.suffix == ".json":
            text = json.dumps(doc, indent=2)
        else:
            text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        if output is None:
            self.stdout.write(text)
        else:
            output.write_text(text)
            self.stdout.write(f"wrote {output}")
