"""What every benchmark shares: its own database and vhost, figures, the ABBA order, the table.

The machine's speed drifts (up to 1.7x from one minute to the next), so no figure stands
alone: each is measured beside a reference in the same run, in alternating rounds
(ours, reference, reference, ours, …) so that a slow minute hits both alike, and is
reported as a ratio.
"""

from __future__ import annotations

import atexit
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
DB_NAME = "petstore_bench"
ES_DB_NAME = "petstore_bench_es"  # the eventsourcing library's tables live apart from ours


def log(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Goal:
    """A goal on the ratio (`ratio >= 0.8`) or on the value itself (`<= 25 ms`)."""

    on: str  # "ratio" or "value"
    op: str  # ">=" or "<="
    bound: float
    unit: str = ""

    def met(self, value: float, ratio: float) -> bool | None:
        measured = ratio if self.on == "ratio" else value
        if measured is None or math.isnan(measured):
            return None
        return measured >= self.bound if self.op == ">=" else measured <= self.bound

    def __str__(self) -> str:
        if self.on == "ratio":
            return f"ratio {self.op} {self.bound:g}"
        return f"{self.op} {self.bound:g} {self.unit}".rstrip()


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    reference: float
    reference_label: str
    goal: Goal | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.goal is not None and not isinstance(self.goal, Goal):  # e.g. notes passed as the goal
            raise TypeError(f"{self.name}: goal must be a Goal, not {type(self.goal).__name__}")

    @property
    def ratio(self) -> float:
        if not self.reference or math.isnan(self.reference) or math.isnan(self.value):
            return math.nan
        return self.value / self.reference

    @property
    def met(self) -> bool | None:
        return self.goal.met(self.value, self.ratio) if self.goal else None

    def as_json(self) -> dict:
        data = asdict(self)
        data.update(ratio=_finite(self.ratio), met=self.met, goal=str(self.goal) if self.goal else None)
        data.update(value=_finite(self.value), reference=_finite(self.reference))
        return data


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 4)


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def abba(rounds: int) -> Iterator[tuple[int, str]]:
    """Yield (round, "ours"|"ref") in ABBA order: linear drift then hits both sides equally."""
    for index in range(rounds):
        order = ("ours", "ref") if index % 2 == 0 else ("ref", "ours")
        for side in order:
            yield index, side


# ----------------------------------------------------------------------------- the run


@dataclass
class Bench:
    """One run's settings and resources, handed to every figure's run()."""

    quick: bool
    postgres_url: str  # server URL without a database name
    amqp_url: str  # server URL without a vhost
    vhost: str = ""
    tools: dict[str, str] = field(default_factory=dict)
    #: Figures one module measures and another reuses (e.g. the Celery no-op drain rate).
    measured: dict[str, float] = field(default_factory=dict)

    def scale(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    @property
    def database_url(self) -> str:
        return f"{self.postgres_url}/{DB_NAME}"

    @property
    def broker_url(self) -> str:
        return f"{self.amqp_url}/{self.vhost}"

    def es_env(self) -> dict[str, str]:
        """Environment for the eventsourcing library: POSTGRES persistence, its own database."""
        parts = urlsplit(self.postgres_url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": ES_DB_NAME,
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or "",
        }


def recreate_databases(postgres_url: str) -> None:
    """Drop and create the bench's two databases (never the development or test one)."""
    import psycopg

    with psycopg.connect(f"{postgres_url}/postgres", autocommit=True) as conn:
        for name in (DB_NAME, ES_DB_NAME):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_databases(postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(f"{postgres_url}/postgres", autocommit=True) as conn:
        for name in (DB_NAME, ES_DB_NAME):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost() -> str:
    """Create a vhost of this run's own (guest may use it), so no other queue is touched."""
    if shutil.which("rabbitmqctl") is None:
        raise SystemExit("bench: rabbitmqctl is needed to create the bench's own RabbitMQ vhost")
    vhost = f"petstore-bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return vhost


def delete_vhost(vhost: str) -> None:
    rabbitmqctl("delete_vhost", vhost)


def setup_django(bench: Bench) -> None:
    """Point Django at the bench settings, database and vhost, then migrate."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["BENCH_DATABASE_URL"] = bench.database_url
    os.environ["BENCH_BROKER_URL"] = bench.broker_url
    media_root = tempfile.mkdtemp(prefix="petstore-bench-media-")  # the certificates of this run
    atexit.register(shutil.rmtree, media_root, ignore_errors=True)
    os.environ["BENCH_MEDIA_ROOT"] = media_root
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def pet_repository():
    """The product's event store for pets, as the brief's commands use it."""
    from adoptions.domain import Pet
    from events.store import AggregateRepository

    return AggregateRepository(Pet)


def django_child_setup() -> None:
    """In a spawned process: the parent's environment already names the bench settings."""
    import django

    django.setup()


@dataclass(frozen=True)
class Failure:
    traceback: str


def run_together(prepare, arg_sets: list[tuple], *, timeout: float, on_start=None) -> list:
    """Run prepare(*args) in one spawned process per arg set, then all their work at once.

    prepare (a module-level function) connects and warms up, and returns the function to
    time; every process starts that function when the last one is ready, as on_start() is
    called here.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(arg_sets) + 1), ctx.Queue()
    processes = [
        ctx.Process(target=_together, args=(prepare, args, barrier, results), daemon=True)
        for args in arg_sets
    ]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=180)
        if on_start is not None:
            on_start()
    except threading.BrokenBarrierError:
        pass  # a process failed while getting ready: its traceback is on the queue
    out = [results.get(timeout=timeout + 180) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    failures = [r for r in out if isinstance(r, Failure)]
    if failures:
        raise RuntimeError(f"a benchmark process failed:\n{failures[0].traceback}")
    return out


def _together(prepare, args: tuple, barrier, results) -> None:
    try:
        django_child_setup()
        work = prepare(*args)
    except BaseException:
        barrier.abort()
        results.put(Failure(traceback.format_exc()))
        return
    try:
        barrier.wait(timeout=180)
        results.put(work())
    except BaseException:
        results.put(Failure(traceback.format_exc()))


# ----------------------------------------------------------------------------- output

COLUMNS = ("figure", "value", "reference", "ratio", "goal", "met?")


def _num(x: float, unit: str) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f} {unit}".rstrip()


def table(figures: list[Figure]) -> str:
    """Render the figures as one plain-text table, with the references' meaning below it."""
    rows = [COLUMNS]
    for f in figures:
        met = {True: "yes", False: "NO", None: "-"}[f.met]
        ratio = "n/a" if math.isnan(f.ratio) else f"{f.ratio:.2f}"
        rows.append(
            (
                f.name,
                _num(f.value, f.unit),
                _num(f.reference, f.unit),
                ratio,
                str(f.goal) if f.goal else "-",
                met,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            c.ljust(w) if i in (0, 4, 5) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("references (ratio = value / reference, both measured in this run, alternating):")
    for f in figures:
        lines.append(f"  {f.name}: {f.reference_label}")
        lines.extend(f"      note: {note}" for note in f.notes)
    return "\n".join(lines)


def machine_info() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
    }


def write_results(bench: Bench, figures: list[Figure], *, started: datetime, errors: dict) -> Path:
    """Write bench/results.json and a timestamped copy beside it (both git-ignored)."""
    data = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "quick": bench.quick,
        "machine": machine_info(),
        "tools": bench.tools,
        "figures": [f.as_json() for f in figures],
        "errors": errors,
    }
    text = json.dumps(data, indent=2) + "\n"
    path = BENCH_DIR / "results.json"
    path.write_text(text)
    (BENCH_DIR / f"results-{started.strftime('%Y%m%dT%H%M%SZ')}.json").write_text(text)
    return path
