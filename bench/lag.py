"""Figure 9: projection lag — commit to checkpoint — under a steady 200 commands/s.

`manage.py run_projections` runs as its own process (LISTEN/NOTIFY wake-ups, every
projection). Four producer processes each issue 50 commands/s (open loop) through
adoptions.services: per ten commands five pet registrations, four adoptions and one return,
and record the wall time right after each command's COMMIT, keyed by its log position. A
thread polls the projections' checkpoints every 5 ms; an event's lag is the start of the
first poll whose checkpoint had passed it, minus its commit time (so up to 5 ms high).
Reference: a bare NOTIFY -> LISTEN round trip at the same rate, from the same four processes
(from sending pg_notify in autocommit until a listening thread has it). Rounds
alternate; one more round at 100 commands/s shows the lag when the two cores have room.
"""

from __future__ import annotations

import bisect
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from .harness import PROJECT_DIR, Bench, Figure, Goal, abba, log, percentile, run_together
from .readside import fresh_log, shelters
from .stack import machine_busy, proc_stat, stop

RATE = 200.0
PRODUCERS = 4
POLL_SECONDS = 0.005
PROBE_CHANNEL = "bench_lag_probe"
FIGURE_PROJECTION = "available_pets"
REFERENCE = "bare NOTIFY -> LISTEN round trip at 200/s (pg_notify sent in autocommit -> a listening thread)"


def run(bench: Bench) -> list[Figure]:
    from readmodels.runner import catch_up_all

    seconds, ref_seconds = bench.scale(15, 5), bench.scale(5, 2)
    # ABBA at the goal's rate, then once at half of it: the lag when the machine has room.
    schedule = [(side, RATE) for _, side in abba(2)] + [("half", RATE / 2)]
    fresh_log()
    shelter_ids = [str(s) for s in shelters()[:PRODUCERS]]
    customers = [str(_customer(n)) for n in range(PRODUCERS)]
    catch_up_all()
    tallies = {side: Tally() for side in ("ours", "ref", "half")}
    try:
        with Projector(bench.database_url) as projector:
            for side, rate in schedule:
                length = ref_seconds if side == "ref" else seconds
                log(f"lag: {side}, {rate:.0f} commands/s for {length:.0f} s")
                kind = "notify" if side == "ref" else "command"
                args = [(kind, rate, n, shelter_ids[n], customers[n], length) for n in range(PRODUCERS)]
                if side == "ref":
                    _notify_round(bench.database_url, args, length, tallies[side])
                else:
                    _command_round(bench.database_url, projector.pid, args, length, tallies[side])
    finally:
        fresh_log()
    return _figures(tallies)


@dataclass
class Tally:
    """What the rounds of one side measured: lag samples (ms) by projection, and the load."""

    lags: dict[str, list[float]] = field(default_factory=dict)
    commands: int = 0
    seconds: float = 0.0
    missing: int = 0
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (machine busy share, projector cores)

    def add(self, out, samples: dict[str, list[float]], missing: int) -> None:
        self.commands += sum(len(rows) for rows, _ in out)
        self.seconds += max(elapsed for _, elapsed in out)
        for name, values in samples.items():
            self.lags.setdefault(name, []).extend(values)
        self.missing += missing

    def summary(self) -> str:
        ours = self.lags.get(FIGURE_PROJECTION, [])
        rate = self.commands / self.seconds if self.seconds else float("nan")
        cpu = ", ".join(f"machine {m:.0%} busy, projector {p:.2f} core" for m, p in self.cpu)
        return (
            f"{self.commands} commands in {self.seconds:.1f} s ({rate:.0f}/s achieved), {self.missing} "
            f"never passed; p99.9 {percentile(ours, 99.9):.1f} ms, max {max(ours, default=float('nan')):.1f}"
            f" ms; CPU while producing: {cpu}"
        )


def _command_round(database_url: str, projector_pid: int, args: list, length: float, tally: Tally) -> None:
    with CheckpointPoller(database_url) as poller, CpuSampler(projector_pid) as cpu:
        out = run_together(_producer, args, timeout=length * 3)
        commits = [row for rows, _ in out for row in rows]
        targets = _log_positions(commits)
        poller.wait_until_passed(targets, timeout=15)
    committed = [at for _, at in commits]
    tally.cpu.append(cpu.during(min(committed), max(committed)))
    measured = _lags(commits, targets, poller)
    tally.add(out, measured, len(commits) - len(measured.get(FIGURE_PROJECTION, [])))


def _notify_round(database_url: str, args: list, length: float, tally: Tally) -> None:
    with NotifyListener(database_url) as listener:
        out = run_together(_producer, args, timeout=length * 3)
        time.sleep(0.5)
    commits = [row for rows, _ in out for row in rows]
    arrived = [(listener.arrivals[key] - at) * 1000 for key, at in commits if key in listener.arrivals]
    tally.add(out, {"notify": arrived}, len(commits) - len(arrived))


def _figures(tallies: dict[str, Tally]) -> list[Figure]:
    ours, half = tallies["ours"], tallies["half"]
    ref = tallies["ref"].lags.get("notify", [])
    lag, lag_half = ours.lags.get(FIGURE_PROJECTION, []), half.lags.get(FIGURE_PROJECTION, [])
    notes = [
        f"{RATE:.0f}/s: {ours.summary()}",
        "every projection, p50/p99 ms: "
        + ", ".join(f"{n} {percentile(v, 50):.1f}/{percentile(v, 99):.1f}" for n, v in ours.lags.items()),
        f"reference: {tallies['ref'].commands} notifications, {tallies['ref'].missing} never arrived",
    ]
    half_notes = [f"{RATE / 2:.0f}/s: {half.summary()}"]
    return [
        Figure(
            f"projection lag p50 @{RATE:.0f} commands/s",
            percentile(lag, 50),
            "ms",
            percentile(ref, 50),
            REFERENCE,
        ),
        Figure(
            f"projection lag p99 @{RATE:.0f} commands/s",
            percentile(lag, 99),
            "ms",
            percentile(ref, 99),
            REFERENCE,
            Goal("value", "<=", 500, "ms"),
            notes,
        ),
        Figure(
            f"projection lag p99 @{RATE / 2:.0f} commands/s",
            percentile(lag_half, 99),
            "ms",
            percentile(ref, 99),
            REFERENCE,
            notes=half_notes,
        ),
    ]


# ----------------------------------------------------------------------------- producers


def _customer(n: int) -> uuid.UUID:
    from django.contrib.auth import get_user_model

    from adoptions.models import Customer

    user, _ = get_user_model().objects.get_or_create(username=f"bench-lag-{n}")
    customer, _ = Customer.objects.get_or_create(
        user=user, defaults={"full_name": f"Lag Customer {n}", "email": f"lag{n}@example.com"}
    )
    return customer.id


def _producer(kind: str, rate: float, n: int, shelter_id: str, customer_id: str, seconds: float):
    """Get ready (connect, warm up); return the paced loop (open loop: never waits on lag)."""
    command = _service_command(n, shelter_id, customer_id) if kind == "command" else _notify_command(n)
    command(-1)
    rate = rate / PRODUCERS

    def loop() -> tuple[list[tuple[int | str, float]], float]:
        rows, start = [], time.perf_counter()
        for slot in range(int(rate * seconds)):
            time.sleep(max(0.0, start + slot / rate - time.perf_counter()))
            rows.append(command(slot))
        return rows, time.perf_counter() - start

    return loop


def _service_command(n: int, shelter_id: str, customer_id: str):
    """Return a function that runs the slot's command and gives (log position, commit time)."""
    from adoptions import services
    from adoptions.models import Customer, Shelter
    from events.catalogue import Species
    from events.context import CommandContext

    shelter, customer = Shelter.objects.get(id=shelter_id), Customer.objects.get(id=customer_id)
    species = list(Species)
    available: deque = deque()
    adopted: deque = deque()
    context = CommandContext.system

    def command(slot: int) -> tuple[int, float]:
        kind = slot % 10
        if 5 <= kind <= 8 and available:
            pet_id = available.popleft()
            position = services.pet_adopt(pet_id=pet_id, customer=customer, context=context()).position
            adopted.append(pet_id)
        elif kind == 9 and adopted:
            pet_id = adopted.popleft()
            position = services.pet_return(pet_id=pet_id, reason="Moved abroad", context=context()).position
            available.append(pet_id)
        else:
            change = services.pet_register(
                shelter=shelter,
                name=f"Lag {n}-{slot}",
                species=species[slot % 4],
                age=slot % 16,
                context=context(),
            )
            position = change.position
            available.append(change.pet_id)
        return position, time.time()  # the service returns right after its COMMIT

    return command


def _notify_command(n: int):
    from django.db import connection

    cursor = connection.cursor()

    def command(slot: int) -> tuple[str, float]:
        key = f"{n}:{slot}"
        sent = time.time()  # before: the listener may hear it before this call returns
        cursor.execute("SELECT pg_notify(%s, %s)", [PROBE_CHANNEL, key])
        return key, sent

    return command


# ----------------------------------------------------------------------------- observers


class Projector:
    """`manage.py run_projections` with the bench settings; ready once it has caught up."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def __enter__(self) -> Projector:
        command = [sys.executable, "manage.py", "run_projections"]
        self.process = subprocess.Popen(
            command, cwd=PROJECT_DIR, env=os.environ.copy(), start_new_session=True
        )
        self.pid = self.process.pid
        _probe(self.database_url)
        return self

    def __exit__(self, *exc) -> None:
        stop(self.process, grace=20)


def _probe(database_url: str) -> None:
    """Commit one registration and wait until every projection has passed it."""
    from adoptions import services
    from adoptions.models import Shelter
    from events.catalogue import Species
    from events.context import CommandContext

    change = services.pet_register(
        shelter=Shelter.objects.filter(name__startswith="Read-side").first(),
        name="Probe",
        species=Species.DOG,
        age=1,
        context=CommandContext.system(),
    )
    with CheckpointPoller(database_url) as poller:
        if not poller.wait_until_passed(_log_positions([(change.position, 0.0)]), timeout=60):
            raise RuntimeError("run_projections did not catch up with a probe within 60 s")


class CheckpointPoller:
    """A thread that records each projection's checkpoint whenever it moves."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.samples: dict[str, list[tuple[tuple[int, int], float]]] = {}
        self._stop = threading.Event()

    def __enter__(self) -> CheckpointPoller:
        import psycopg

        from readmodels.models import ProjectionState

        self.conn = psycopg.connect(self.database_url, autocommit=True)
        self.sql = f"SELECT name, transaction_id, position FROM {ProjectionState._meta.db_table}"
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        last: dict[str, tuple[int, int]] = {}
        while not self._stop.is_set():
            began = time.time()  # the checkpoint was committed before this poll's snapshot
            for name, transaction_id, position in self.conn.execute(self.sql).fetchall():
                if last.get(name) != (transaction_id, position):
                    last[name] = (transaction_id, position)
                    self.samples.setdefault(name, []).append(((transaction_id, position), began))
            time.sleep(max(0.0, began + POLL_SECONDS - time.time()))

    def passed(self, target: tuple[int, int]) -> bool:
        from readmodels.projector import PROJECTIONS

        latest = [s[-1][0] for s in list(self.samples.values()) if s]
        return len(latest) == len(PROJECTIONS) and all(pos >= target for pos in latest)

    def wait_until_passed(self, targets: dict[int, tuple[int, int]], *, timeout: float) -> bool:
        last = max(targets.values(), default=(0, 0))
        deadline = time.monotonic() + timeout
        while not self.passed(last):
            if time.monotonic() > deadline:
                log("lag: the projections did not pass the last event in time")
                return False
            time.sleep(0.05)
        return True

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.conn.close()


def _log_positions(commits) -> dict[int, tuple[int, int]]:
    """(transaction id, position) of each committed position: the readers' order."""
    from events.models import StoredEvent

    positions = [position for position, _ in commits]
    rows = StoredEvent.objects.filter(position__in=positions).values_list("position", "transaction_id")
    return {position: (transaction_id, position) for position, transaction_id in rows}


def _lags(commits, targets: dict[int, tuple[int, int]], poller: CheckpointPoller) -> dict[str, list[float]]:
    """Lag in ms of every commit the projection passed, per projection."""
    out = {}
    for name, samples in poller.samples.items():
        checkpoints = [checkpoint for checkpoint, _ in samples]
        lags = []
        for position, committed in commits:
            index = bisect.bisect_left(checkpoints, targets[position])
            if index < len(samples):
                lags.append((samples[index][1] - committed) * 1000)
        out[name] = lags
    return out


class NotifyListener:
    """A thread LISTENing on the probe channel, recording when each payload arrives."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.arrivals: dict[str, float] = {}
        self._stop = threading.Event()

    def __enter__(self) -> NotifyListener:
        import psycopg

        self.conn = psycopg.connect(self.database_url, autocommit=True)
        self.conn.execute(f"LISTEN {PROBE_CHANNEL}")
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()
        return self

    def _listen(self) -> None:
        while not self._stop.is_set():
            for note in self.conn.notifies(timeout=0.2):
                self.arrivals.setdefault(note.payload, time.time())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.conn.close()


class CpuSampler:
    """A thread that samples the machine's and one process's CPU time from /proc twice a second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int, int, float]] = []  # (time, busy, total jiffies, pid s)
        self._stop = threading.Event()

    def __enter__(self) -> CpuSampler:
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.is_set():
            jiffies = proc_stat()
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            busy = machine_busy(jiffies)
            self.samples.append((time.time(), busy, sum(jiffies), (int(fields[11]) + int(fields[12])) / tick))
            self._stop.wait(0.5)

    def during(self, start: float, end: float) -> tuple[float, float]:
        """The machine's busy share and the process's cores used between two wall times."""
        inside = [s for s in self.samples if start <= s[0] <= end] or self.samples
        first, last = inside[0], inside[-1]
        if last[2] == first[2]:
            return float("nan"), float("nan")
        return (last[1] - first[1]) / (last[2] - first[2]), (last[3] - first[3]) / (last[0] - first[0])

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
