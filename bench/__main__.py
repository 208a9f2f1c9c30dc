"""Run the benchmarks: `python -m bench [--quick] [--only api,relay]` (or `make bench`).

Each figure lives in its own module (bench/<figure>.py) with a run(bench) -> [Figure].
The run gets a fresh PostgreSQL database (petstore_bench, plus petstore_bench_es for the
eventsourcing library) and a RabbitMQ vhost of its own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from datetime import UTC, datetime

from . import harness

FIGURES = {
    "api": "POST /api/adoptions under gunicorn vs a bare DRF insert",
    "append": "events/s appended with outbox rows, 1 and 4 writers, vs eventsourcing",
    "load": "load time of 1,000- and 10,000-event pets vs eventsourcing",
    "relay": "outbox -> RabbitMQ with confirms vs raw py-amqp with batched confirms",
    "latency": "commit-to-consume latency at 200 events/s vs publishing right after commit",
    "handlers": "a worker draining real adoption steps, tasks/s, vs Celery no-op tasks",
    "system": "highest adoption rate the whole system sustains, with CPU per component",
    "e2e": "202 -> completed at 20 adoptions/s; POST latency with vs without side effects",
    "rebuild": "full rebuild of available_pets from 1,000,000 events vs a plain ordered read",
    "query": "GET available-pets with 100,000 pets, 16 clients, vs a bare DRF one-row read",
    "lag": "projection lag under 200 commands/s vs a bare NOTIFY -> LISTEN round trip",
    "validation": "validating an incoming message per event type vs json.loads of its body",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (about 3 minutes in all)")
    parser.add_argument(
        "--only",
        default="",
        metavar="NAMES",
        help=f"comma-separated figures to run, from: {', '.join(FIGURES)} (default: all)",
    )
    parser.add_argument("--keep-db", action="store_true", help="leave the bench databases for inspection")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432"),
        help="PostgreSQL server URL without a database name (env BENCH_POSTGRES_URL)",
    )
    parser.add_argument(
        "--amqp",
        default=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672"),
        help="RabbitMQ server URL without a vhost (env BENCH_AMQP_URL); guest must exist",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()] or list(FIGURES)
    unknown = set(args.only) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    bench = harness.Bench(
        quick=args.quick, postgres_url=args.postgres.rstrip("/"), amqp_url=args.amqp.rstrip("/")
    )
    figures: list[harness.Figure] = []
    errors: dict[str, str] = {}
    harness.log(f"figures: {', '.join(args.only)}{' (quick)' if args.quick else ''}")
    harness.recreate_databases(bench.postgres_url)
    bench.vhost = harness.create_vhost()
    try:
        harness.setup_django(bench)
        for name in args.only:
            began = time.monotonic()
            harness.log(f"{name}: {FIGURES[name]}")
            try:
                module = importlib.import_module(f"bench.{name}")
                figures += module.run(bench)
            except Exception:
                errors[name] = traceback.format_exc()
                harness.log(f"{name} FAILED:\n{errors[name]}")
            harness.log(f"{name}: done in {time.monotonic() - began:.0f} s")
    finally:
        _close_django_connections()
        harness.delete_vhost(bench.vhost)
        if not args.keep_db:
            harness.drop_databases(bench.postgres_url)
    print(harness.table(figures))
    for name in errors:
        print(f"\n{name}: FAILED (traceback above, and in results.json)")
    path = harness.write_results(bench, figures, started=started, errors=errors)
    print(f"\nwrote {path.relative_to(harness.PROJECT_DIR)}; tools: {bench.tools}")
    return 1 if errors else 0


def _close_django_connections() -> None:
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
