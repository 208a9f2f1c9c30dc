"""The running system for the side-effect figures: relay and Celery worker processes, the pets
they adopt, their backlog, and the CPU each process spends (from /proc).

bench/handlers.py, bench/system.py and bench/e2e.py share these pieces; gunicorn comes from
bench/api.py. Every process runs with the bench settings, database and vhost (the parent's
environment), and is stopped by its own id or process group, never by name.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from .harness import PROJECT_DIR, django_child_setup, log

# The workers run as the Procfile runs them (`worker`: every queue but certificates, the
# prefork pool with a child per core; `certificates`: that queue alone, one message per child),
# at WARNING so logging does not bill the figures. BENCH_WORKER_CONCURRENCY sets the general
# worker's children for experiments (the Procfile leaves it to Celery: one per core).
WORKER_CONCURRENCY = os.environ.get("BENCH_WORKER_CONCURRENCY")
PROCFILE_WORKERS = ("worker", "certificates")
SHELTERS = 50  # pets are spread over this many shelters, as adoptions are in a real system


def procfile_worker_commands() -> dict[str, list[str]]:
    """{process: argv} of the Procfile's Celery workers, quiet, with this Python."""
    from honcho.environ import parse_procfile

    lines = parse_procfile((PROJECT_DIR / "Procfile").read_text()).processes  # as make run reads it
    commands = {}
    for name in PROCFILE_WORKERS:
        argv = shlex.split(lines[name])
        assert argv[:4] == ["celery", "-A", "petstore", "worker"], f"Procfile {name}: {lines[name]}"
        options = argv[4:]
        level = options.index("--loglevel")
        options[level + 1] = "WARNING"
        if name == "worker" and WORKER_CONCURRENCY:
            options += ["--concurrency", WORKER_CONCURRENCY]
        commands[name] = [sys.executable, "-m", "celery", "-A", "petstore", "--quiet", "worker", *options]
    return commands


def worker_description() -> str:
    shape = f"-c {WORKER_CONCURRENCY}" if WORKER_CONCURRENCY else "one child per core"
    return (
        f"the Procfile's workers: worker ({shape}, every queue but certificates),"
        " certificates (one child per core, prefetch 1 per child)"
    )


# ----------------------------------------------------------------------------- processes


def stop(process: subprocess.Popen, *, grace: float) -> None:
    """SIGTERM (a warm shutdown), then SIGKILL the process's own group if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"process {process.pid} did not stop within {grace:.0f} s: killing its group")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


class CeleryWorker:
    """The Procfile's Celery workers on every queue between them; ready once each queue has
    its consumer."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def trees(self) -> dict[str, int]:
        """{component: root pid} for CpuMeter: each worker's main process and pool children."""
        return {f"celery {name}": process.pid for name, process in self.processes.items()}

    @contextlib.contextmanager
    def running(self, *, wait: bool = True):
        """Run the workers for the block; with `wait`, enter once they consume every queue."""
        try:
            for name, command in procfile_worker_commands().items():
                self.processes[name] = subprocess.Popen(  # stdout carries only the table
                    command, cwd=PROJECT_DIR, env=os.environ.copy(), start_new_session=True, stdout=sys.stderr
                )
            if wait:
                self._wait_until_consuming()
            yield self
        finally:
            for process in self.processes.values():
                stop(process, grace=30)
            self.processes = {}

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the celery {name} worker exited with {process.returncode}")

    def _wait_until_consuming(self) -> None:
        deadline = time.monotonic() + 60
        while not all(consumers for _, consumers in queue_stats(self.broker_url).values()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the celery workers did not consume every queue within 60 s")
            time.sleep(0.05)


class RelayProcess:
    """`manage.py relay_outbox`; ready once its LISTEN connection is open (nothing published)."""

    def __enter__(self) -> RelayProcess:
        listening = _listeners()  # a projector listens on the same channel
        command = [sys.executable, "manage.py", "relay_outbox"]
        self.process = subprocess.Popen(
            command, cwd=PROJECT_DIR, env=os.environ.copy(), start_new_session=True
        )
        deadline = time.monotonic() + 60
        while _listeners() <= listening:
            if self.process.poll() is not None:
                raise RuntimeError(f"the relay exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the relay did not LISTEN within 60 s")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def __exit__(self, *exc) -> None:
        stop(self.process, grace=20)


def _listeners() -> int:
    """Connections to the bench database that LISTEN for outbox commits."""
    from django.db import connection

    from events.outbox import WAKE_CHANNEL

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            [f"LISTEN {WAKE_CHANNEL}"],
        )
        return cursor.fetchone()[0]


# ----------------------------------------------------------------------------- the broker


def adoption_steps() -> int:
    """How many handlers a PetAdopted fans out to: the steps of one adoption."""
    from events.handlers import handlers_for

    return len(handlers_for("PetAdopted"))


def handler_queues() -> list[str]:
    from django.conf import settings

    return list(settings.PETSTORE_HANDLER_QUEUES)


def queue_stats(url: str) -> dict[str, tuple[int, int]]:
    """{queue: (ready messages, consumers)} for every task queue."""
    from django.conf import settings

    from . import rabbit

    names = [q.name for q in settings.CELERY_TASK_QUEUES]
    connection = rabbit.connect(url)
    try:
        channel = connection.channel()
        stats = {}
        for name in names:
            _, ready, consumers = channel.queue_declare(name, passive=True)
            stats[name] = (ready, consumers)
        return stats
    finally:
        connection.close()


class QueueWatch:
    """One open AMQP connection that reads queue depths cheaply, again and again."""

    def __init__(self, url: str, queues: Iterable[str]) -> None:
        from . import rabbit

        self.queues = list(queues)
        self.connection = rabbit.connect(url)
        self.channel = self.connection.channel()

    def depth(self) -> int:
        return sum(self.channel.queue_declare(q, passive=True)[1] for q in self.queues)

    def close(self) -> None:
        self.connection.close()


def declare_and_purge(url: str) -> None:
    """Declare the product's topology and empty every task queue and the unrouted queue."""
    from events.broker import UNROUTED_QUEUE

    from . import rabbit

    rabbit.bind_queue(url, "bench.unused", "bench.unused")  # declares the product topology
    connection = rabbit.connect(url)
    try:
        channel = connection.channel()
        channel.queue_delete("bench.unused")
        for name in [*queue_stats(url), UNROUTED_QUEUE]:
            channel.queue_purge(name)
    finally:
        connection.close()


def purge_unrouted(url: str) -> None:
    """Drop the published events nobody subscribes to (kept by the alternate exchange)."""
    from events.broker import UNROUTED_QUEUE

    from . import rabbit

    rabbit.purge(url, UNROUTED_QUEUE)


# ----------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Customer:
    token: str
    customer_id: uuid.UUID


def customer_with_token(username: str) -> Customer:
    """A customer (adopting for themselves) with an API token, created once per run."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from adoptions.models import Customer as CustomerModel

    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_password("bench-password-1")
        user.save()
    customer, _ = CustomerModel.objects.get_or_create(
        user=user, defaults={"full_name": "Bench Family", "email": f"{username}@example.com"}
    )
    token, _ = Token.objects.get_or_create(user=user)
    return Customer(token.key, customer.id)


def shelters(count: int = SHELTERS) -> list[uuid.UUID]:
    from adoptions.models import Shelter

    return [
        Shelter.objects.get_or_create(
            name=f"Bench Shelter {n:03d}", defaults={"contact_email": f"s{n}@example.com"}
        )[0].id
        for n in range(count)
    ]


def pets_register(count: int) -> list[str]:
    """Register `count` pets through the real command (100 per transaction).

    Spread over the bench shelters. Their own outbox rows (PetRegistered, PetAvailable) are
    marked published at once: their side effects are not what the figures measure. Call it
    only while no relay runs, or the relay may publish some of them first.
    """
    shelter_ids = shelters()
    if count <= 300:  # starting two processes would take longer than the work
        ids = _register(shelter_ids, count, 0)
    else:
        workers = 2
        share = math.ceil(count / workers)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=spawn, initializer=django_child_setup) as pool:
            batches = pool.map(_register, [shelter_ids] * workers, [share] * workers, range(workers))
            ids = [pet_id for batch in batches for pet_id in batch]
    outbox_skip_pending()
    return ids[:count]


def _register(shelter_ids: list[uuid.UUID], count: int, offset: int) -> list[str]:
    from django.db import transaction

    from adoptions import services
    from adoptions.models import Shelter
    from events.catalogue import Species
    from events.context import CommandContext

    shelters_by_id = Shelter.objects.in_bulk(shelter_ids)
    context, ids = CommandContext.system(), []
    for start in range(0, count, 100):
        with transaction.atomic():
            for n in range(start, min(count, start + 100)):
                shelter = shelters_by_id[shelter_ids[(n * 2 + offset) % len(shelter_ids)]]
                change = services.pet_register(
                    shelter=shelter, name=f"Pet {offset}-{n}", species=Species.DOG,
                    age=n % 15, context=context,
                )  # fmt: skip
                ids.append(str(change.pet_id))
    return ids


def vacuum_analyze() -> None:
    """VACUUM ANALYZE the bench database: what autovacuum would have done by now in a running
    system. It is off on this machine's server, and without it each probe or round would run
    on the dead rows and stale statistics of those before it (outbox rows marked sent,
    deliveries updated twice, adoptions completed)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def outbox_skip_pending() -> int:
    """Mark every pending outbox row published without sending it; return how many."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE event_outbox SET published_at = now(), claim_token = NULL,"
            " claimed_until = NULL WHERE published_at IS NULL"
        )
        return cursor.rowcount


def outbox_pending() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM event_outbox WHERE published_at IS NULL")
        return cursor.fetchone()[0]


# ----------------------------------------------------------------------------- adoptions


@dataclass(frozen=True)
class Outcome:
    """How the adoptions of a set of pets ended, read from the database."""

    adoptions: int
    completed: int
    other: dict[str, int]  # adoptions not completed, by status
    certificates: int
    e2e: list[float]  # seconds from created_at (the 202) to completed_at, completed ones
    work: list[float]  # seconds the seven steps ran (sum of their deliveries' run times)
    unfinished_created: list[float]  # created_at (epoch seconds) of those not completed

    def __str__(self) -> str:
        return (
            f"{self.adoptions} adoptions, {self.completed} completed {self.other or ''}, "
            f"{self.certificates} certificates"
        )


def outcome(pet_ids: list[str]) -> Outcome:
    """Read the adoptions of these pets: status, certificate, end-to-end time, step time."""
    from django.db import connection

    sql = """
        SELECT a.status,
               EXTRACT(EPOCH FROM a.completed_at - a.created_at),
               (SELECT count(*) FROM notifications_certificate c WHERE c.adoption_id = a.id),
               (SELECT sum(EXTRACT(EPOCH FROM d.finished_at - d.started_at))
                  FROM event_delivery d WHERE d.event_id = a.adopted_event_id),
               EXTRACT(EPOCH FROM a.created_at)
          FROM adoptions_adoption a
         WHERE a.pet_id = ANY(%s::uuid[])
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [pet_ids])
        rows = cursor.fetchall()
    other: dict[str, int] = {}
    for status, *_ in rows:
        if status != "completed":
            other[status] = other.get(status, 0) + 1
    done = [row for row in rows if row[0] == "completed"]
    return Outcome(
        adoptions=len(rows),
        completed=len(done),
        other=other,
        certificates=sum(row[2] for row in rows),
        e2e=[float(row[1]) for row in done],
        work=[float(row[3] or 0) for row in done],
        unfinished_created=[float(row[4]) for row in rows if row[0] != "completed"],
    )


def wait_until_completed(pet_ids: list[str], *, expected: int, timeout: float) -> float:
    """Wait until `expected` adoptions of these pets are completed; return the seconds waited."""
    from django.db import connection

    start = time.monotonic()
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM adoptions_adoption WHERE pet_id = ANY(%s::uuid[])"
                " AND status <> 'processing'",
                [pet_ids],
            )
            if cursor.fetchone()[0] >= expected:
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return math.nan
        time.sleep(0.2)


# ----------------------------------------------------------------------------- CPU


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSnapshot:
    at: float
    ticks: dict[str, int]  # component -> utime+stime+cutime+cstime of its processes
    machine_busy: int  # all CPUs, /proc/stat user+nice+system+irq+softirq
    stat: list[int]  # the /proc/stat cpu line: user nice system idle iowait irq softirq steal
    unclaimed: dict[int, tuple[str, int]]  # pid -> (comm, ticks) of processes in no component


@dataclass
class CpuMeter:
    """CPU time per component, read from /proc/<pid>/stat of each process and its children.

    A component is a process tree (gunicorn master and workers, the relay, the Celery main
    process and pool children, this bench process) or every process of a name (all
    `postgres` processes, RabbitMQ's beam.smp). Children that exited and were reaped count
    through their parent's cutime/cstime. "other" is the machine's busy time minus all of
    them: the kernel's network work, and anything else running on the machine.
    """

    trees: dict[str, int] = field(default_factory=dict)  # component -> root pid
    alone: dict[str, int] = field(default_factory=lambda: {"bench (load, monitor)": os.getpid()})
    named: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"postgresql": ("postgres",), "rabbitmq": ("beam.smp",)}
    )

    def snapshot(self) -> CpuSnapshot:
        procs = _read_procs()
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_) in procs.items():
            children.setdefault(ppid, []).append(pid)
        ticks: dict[str, int] = {}
        claimed: set[int] = set()
        for name, root in self.trees.items():
            pids = {pid for pid in _tree(root, children) if pid in procs}
            ticks[name], claimed = sum(sum(procs[pid][2:]) for pid in pids), claimed | pids
        for name, comms in self.named.items():
            roots = [pid for pid, (_, comm, *_) in procs.items() if comm in comms]
            pids = {pid for root in roots for pid in _tree(root, children)}
            ticks[name], claimed = sum(sum(procs[pid][2:]) for pid in pids), claimed | pids
        for name, pid in self.alone.items():  # its own threads only, not its children
            ticks[name] = procs[pid][2] if pid in procs else 0
            claimed.add(pid)
        unclaimed = {pid: (p[1], p[2]) for pid, p in procs.items() if pid not in claimed}
        stat = proc_stat()
        return CpuSnapshot(time.monotonic(), ticks, machine_busy(stat), stat, unclaimed)


def cpu_ms_per(before: CpuSnapshot, after: CpuSnapshot, count: int) -> dict[str, float]:
    """CPU milliseconds per unit of work for each component, plus "other" and "total"."""
    per = {}
    for name, ticks in after.ticks.items():
        per[name] = (ticks - before.ticks.get(name, 0)) * 1000 / CLOCK_TICKS / max(1, count)
    machine = (after.machine_busy - before.machine_busy) * 1000 / CLOCK_TICKS / max(1, count)
    per["other"] = max(0.0, machine - sum(per.values()))
    per["total"] = machine
    return per


def busiest_others(before: CpuSnapshot, after: CpuSnapshot, top: int = 4) -> str:
    """The processes outside every component that used the most CPU (a noisy machine shows)."""
    by_comm: dict[str, int] = {}
    for pid, (comm, ticks) in after.unclaimed.items():
        spent = ticks - before.unclaimed.get(pid, (comm, 0))[1]
        if spent > 0:
            by_comm[comm] = by_comm.get(comm, 0) + spent
    seconds = max(1e-9, after.at - before.at)
    ranked = sorted(by_comm.items(), key=lambda item: -item[1])[:top]
    busy = ", ".join(f"{comm} {ticks / CLOCK_TICKS / seconds * 100:.0f}%" for comm, ticks in ranked)
    stat = [(a - b) / CLOCK_TICKS / seconds * 100 for a, b in zip(after.stat, before.stat, strict=True)]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    machine = ", ".join(f"{name} {share:.0f}%" for name, share in zip(names, stat, strict=True) if share >= 1)
    return f"busiest other processes (% of one core): {busy or 'none'}; machine: {machine}"


def cpu_note(per: dict[str, float], unit: str) -> str:
    parts = ", ".join(f"{name} {ms:.1f}" for name, ms in per.items() if name != "total")
    return f"CPU ms per {unit}: {parts}; total {per['total']:.1f}"


def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def _read_procs() -> dict[int, tuple[int, str, int, int]]:
    """{pid: (ppid, comm, utime+stime, cutime+cstime in ticks)} for every process."""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read().decode(errors="replace")
        except OSError:  # it exited meanwhile
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is the state (stat field 3): ppid is field 4, utime..cstime fields 14-17.
        own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        procs[int(entry)] = (int(fields[1]), comm, own, reaped)
    return procs


def proc_stat() -> list[int]:
    """The machine's cpu line of /proc/stat: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as handle:
        return [int(v) for v in handle.readline().split()[1:9]]


def machine_busy(stat: list[int]) -> int:
    """Jiffies this machine worked: not idle, iowait, nor steal (the hypervisor's other guests)."""
    return stat[0] + stat[1] + stat[2] + stat[5] + stat[6]
