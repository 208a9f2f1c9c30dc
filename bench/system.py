"""Figure 6: the highest adoption rate the whole system sustains, and where its CPU goes.

Everything runs on this machine at once: gunicorn (3 sync workers) serving POST
/api/adoptions, the relay (`manage.py relay_outbox`), the Procfile's two Celery workers
(bench/stack.py: `worker` on every queue but certificates, `certificates` on that one),
PostgreSQL and RabbitMQ. A paced client (open loop, latency counted from
each request's scheduled time) POSTs adoptions at a fixed rate for one probe. The system
keeps up with a rate when
  - every POST is answered 2xx, within a second (p99);
  - the backlog does not grow: over the second half of the probe, adoptions in flight
    (created, not yet completed) grow by at most 10 % of that half's arrivals, plus one
    second's worth (end-to-end times jitter);
  - within GRACE seconds of the last POST every adoption of the probe is `completed` (all
    seven steps succeeded, its certificate PDF drawn).
A monitor samples the backlog every second: adoptions in flight, outbox rows pending, task
messages ready in the handler queues. Rates are tried on a ladder, starting just below what
the handler figure's drain rate predicts, up until one fails (or down until one holds); the
best is then run again for 60 s. If that falls behind (the machine's speed drifts from one
minute to the next), the rung below the completion rate it reached is confirmed instead, up
to three times. The figure is the rate the last confirmation held; its CPU per adoption is
read from /proc for every process (bench/stack.py CpuMeter). Before each probe VACUUM ANALYZE
does what autovacuum would (it is off on this machine's server).
Reference: the Celery no-op drain rate of the same run (bench/handlers.py) divided by the
seven tasks of an adoption: the rate if every step cost only Celery's own overhead.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from .api import ADOPT_PATH, Gunicorn
from .harness import Bench, Figure, Goal, log, percentile
from .loadgen import LoadResult, run_python, weighted_percentile
from .stack import (
    CeleryWorker,
    CpuMeter,
    Outcome,
    QueueWatch,
    RelayProcess,
    adoption_steps,
    busiest_others,
    cpu_ms_per,
    cpu_note,
    customer_with_token,
    declare_and_purge,
    handler_queues,
    outbox_pending,
    outbox_skip_pending,
    outcome,
    pets_register,
    vacuum_analyze,
    wait_until_completed,
    worker_description,
)

GOAL = 50.0  # adoptions/s
# Rates tried, adoptions/s: steps of 15-25 %, from well below to well above the goal.
LADDER = [1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10, 12, 15, 18, 22, 26, 30, 35, 40, 50, 60, 70, 85, 100]
GRACE = 2.0  # seconds after the last POST for the probe's adoptions to complete
GROWTH = 0.1  # the backlog may grow by this share of the second half's arrivals (+ 1 s of them)
CLIENTS = 8
REFERENCE = "Celery no-op drain rate (handlers figure, same run) / 7 tasks per adoption"


@dataclass
class Sample:
    at: float  # seconds since the probe's first POST
    created: int
    completed: int
    outbox_pending: int
    queued: int  # task messages ready in the handler queues


@dataclass
class Probe:
    rate: float
    seconds: float
    posts: LoadResult = field(default_factory=LoadResult)
    samples: list[Sample] = field(default_factory=list)
    drained_after: float = math.nan  # seconds from the last POST until all completed
    result: Outcome | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    others: str = ""

    def halves(self) -> tuple[Sample, Sample] | None:
        """The samples at the middle and at the end of the POSTs."""
        mid, end = self._sample_at(self.seconds / 2), self._sample_at(self.seconds)
        return (mid, end) if mid is not None and end is not None else None

    @property
    def growth(self) -> tuple[int, float]:
        """How much the backlog in flight grew over the second half, and how much it may."""
        if self.halves() is None:
            return 0, math.nan
        mid, end = self.halves()
        grew = (end.created - end.completed) - (mid.created - mid.completed)
        return grew, GROWTH * (end.created - mid.created) + self.rate

    @property
    def completion_rate(self) -> float:
        """Adoptions completed per second over the second half: the capacity, when behind."""
        if self.halves() is None:
            return math.nan
        mid, end = self.halves()
        return (end.completed - mid.completed) / max(1e-9, end.at - mid.at)

    def _sample_at(self, at: float) -> Sample | None:
        before = [s for s in self.samples if s.at <= at + 0.5]
        return before[-1] if before else None

    def failures(self) -> list[str]:
        """Why the system did not keep up with this rate (empty: it did)."""
        out = []
        post_p99 = weighted_percentile(self.posts.latencies, 99)
        if self.posts.failed or self.posts.ran_out:
            out.append(f"{self.posts.failed} POSTs failed")
        if not post_p99 <= 1.0:
            out.append(f"POST p99 {post_p99 * 1000:.0f} ms")
        grew, allowed = self.growth
        if not grew <= allowed:
            out.append(f"backlog grew by {grew} in the second half (allowed {allowed:.0f})")
        if not self.drained_after <= GRACE:
            out.append(f"not all completed {GRACE:.0f} s after the last POST")
        r = self.result
        if r is None or r.completed != self.posts.ok or r.certificates < r.completed:
            out.append(f"outcome {r}")
        return out

    def summary(self) -> str:
        r = self.result
        backlog = "no samples"
        if self.halves() is not None:
            mid, end = self.halves()
            backlog = (
                f"in flight {mid.created - mid.completed} -> {end.created - end.completed}, "
                f"queued tasks {mid.queued} -> {end.queued}, "
                f"outbox pending max {max(s.outbox_pending for s in self.samples)}"
            )
        verdict = "kept up"
        if self.failures():
            verdict = f"FELL BEHIND ({self.completion_rate:.1f} completed/s): " + "; ".join(self.failures())
        return (
            f"{self.rate:g}/s for {self.seconds:.0f} s: {verdict}; {self.posts.ok} POSTs "
            f"(p50 {weighted_percentile(self.posts.latencies, 50) * 1000:.0f} ms, "
            f"p99 {weighted_percentile(self.posts.latencies, 99) * 1000:.0f} ms), "
            f"{r.completed if r else 0} completed, {r.certificates if r else 0} certificates, "
            f"backlog mid -> end: {backlog}, drained {self.drained_after:.1f} s "
            f"after the last POST, 202->completed p50 {percentile(r.e2e, 50):.2f} s "
            f"p99 {percentile(r.e2e, 99):.2f} s"
        )


def run(bench: Bench) -> list[Figure]:
    url = bench.broker_url
    declare_and_purge(url)
    customer = customer_with_token("bench-system")
    probe_seconds, confirm_seconds = bench.scale(20, 8), bench.scale(60, 15)
    # Enough rungs to climb from a low start (a short drain on a slow minute) past the goal's.
    max_probes = int(bench.scale(6, 3))
    _measure_references(bench)
    start = bench.measured["handler_tasks_per_s"] / adoption_steps() * 0.8  # web and relay share the cores
    worker = CeleryWorker(url)
    with Gunicorn() as server, worker.running():
        system = System(server, worker, url, customer.token)
        log("system: warm-up, 2 adoptions/s for 4 s")
        system.probe(2, 4)
        probes, best = _search(system, start, probe_seconds, max_probes)
        confirmed = _confirm(system, best, confirm_seconds, int(bench.scale(3, 1)), probes)
    return _figures(bench, probes, confirmed)


def _confirm(system: System, rate: float | None, seconds: float, tries: int, probes: list[Probe]):
    """Run the best rate for longer; if it falls behind (the machine's speed drifts), try the
    rung below the completion rate it reached, until one holds or the tries run out."""
    confirmed = None
    while rate is not None and tries > 0:
        log(f"system: confirmation, {rate:g}/s for {seconds:.0f} s")
        confirmed = system.probe(rate, seconds, measure_cpu=True)
        log(f"system: {confirmed.summary()}")
        probes.append(confirmed)
        if not confirmed.failures():
            break
        reached = min(rate, confirmed.completion_rate)
        rate = max((r for r in LADDER if r < reached), default=None)
        tries -= 1
    return confirmed


def _measure_references(bench: Bench) -> None:
    """The handler and no-op drain rates, if the handlers figure did not run before."""
    from .handlers import noop_drain, steps_drain

    if "noop_tasks_per_s" not in bench.measured:
        log("system: measuring the Celery no-op drain (the handlers figure did not run)")
        drain = noop_drain(bench.broker_url, int(bench.scale(3000, 1500)))
        bench.measured.update(noop_tasks_per_s=drain.rate, noop_cpu_ms=drain.cpu["total"])
    if "handler_tasks_per_s" not in bench.measured:
        log("system: measuring a short handler drain, to know where to start")
        customer = customer_with_token("bench-handlers")
        drain = steps_drain(bench.broker_url, pets_register(30), customer.customer_id)
        bench.measured["handler_tasks_per_s"] = drain.rate


def _search(system: System, start: float, seconds: float, max_probes: int):
    """Walk the ladder from the rung below `start`; return the probes and the best rate held."""
    index = max(0, max((i for i, rate in enumerate(LADDER) if rate <= start), default=0))
    probes: list[Probe] = []
    held: int | None = None
    failed: int | None = None
    while len(probes) < max_probes:
        probe = system.probe(LADDER[index], seconds)
        probes.append(probe)
        log(f"system: {probe.summary()}")
        if not probe.failures():
            held = index
            if failed == index + 1 or index + 1 == len(LADDER):
                break
            index += 1
        else:
            failed = index
            if held is not None or index == 0:
                break
            index -= 1
    return probes, (LADDER[held] if held is not None else None)


def _figures(bench: Bench, probes: list[Probe], confirmed: Probe | None) -> list[Figure]:
    kept = confirmed is not None and not confirmed.failures()
    rate = confirmed.rate if kept else math.nan
    reference = bench.measured["noop_tasks_per_s"] / adoption_steps()
    notes = [f"{rate / GOAL:.2f} of the goal ({GOAL:g}/s); {worker_description()}; gunicorn 3 sync workers"]
    notes += [f"probe {p.summary()}" for p in probes]
    cpu_total = math.nan
    if confirmed is not None and confirmed.cpu:
        notes.append(cpu_note(confirmed.cpu, f"adoption at {confirmed.rate:g}/s"))
        notes.append(confirmed.others)
        cpu_total = confirmed.cpu["total"]
    noop_cpu = bench.measured.get("noop_cpu_ms", math.nan) * adoption_steps()
    cpu_label = "CPU of seven Celery no-op tasks (handlers figure, same run)"
    return [
        Figure(
            "system sustained adoptions/s",
            rate,
            "adoptions/s",
            reference,
            REFERENCE,
            Goal("value", ">=", GOAL, "adoptions/s"),
            notes,
        ),
        Figure(
            "system CPU per adoption, all processes",
            cpu_total,
            "ms",
            noop_cpu,
            cpu_label,
            Goal("value", "<=", 2000 / GOAL, "ms"),
            [f"goal: 2 cores / {GOAL:g} adoptions/s = {2000 / GOAL:g} ms of CPU per adoption"],
        ),
    ]


# ----------------------------------------------------------------------------- one probe


class System:
    """gunicorn and the worker stay up; each probe registers its pets, then runs the relay."""

    def __init__(self, server: Gunicorn, worker: CeleryWorker, url: str, token: str) -> None:
        self.server, self.worker, self.url, self.token = server, worker, url, token

    def probe(self, rate: float, seconds: float, *, measure_cpu: bool = False) -> Probe:
        from django.utils import timezone

        probe = Probe(rate, seconds)
        pets = pets_register(int(rate * seconds) + 5)  # no relay runs: their own rows are skipped
        vacuum_analyze()
        meter = CpuMeter(trees={"web": self.server.process.pid, **self.worker.trees})
        with RelayProcess() as relay:
            meter.trees["relay"] = relay.pid
            since = timezone.now()
            monitor = Monitor(self.url, since)
            before = meter.snapshot()
            monitor.start()
            probe.posts = run_python(
                self.server.url(ADOPT_PATH), self.token, pets, seconds=seconds, clients=CLIENTS, rate=rate
            )
            waited = wait_until_completed(pets, expected=probe.posts.ok, timeout=GRACE)
            probe.drained_after = waited
            after = meter.snapshot()
            probe.samples = monitor.stop()
            if not waited <= GRACE:  # fell behind: drop its backlog, or it would slow the next probe
                self._drop_backlog()
        probe.result = outcome(pets)
        if measure_cpu:
            probe.cpu = cpu_ms_per(before, after, max(1, probe.result.completed))
            probe.others = busiest_others(before, after)
        return probe

    def _drop_backlog(self) -> None:
        from . import rabbit

        connection = rabbit.connect(self.url)
        try:
            channel = connection.channel()
            for queue in handler_queues():
                channel.queue_purge(queue)
        finally:
            connection.close()
        outbox_skip_pending()
        time.sleep(1)  # the few tasks the worker had prefetched finish


class Monitor(threading.Thread):
    """Sample the backlog every second, on its own database and broker connections."""

    def __init__(self, url: str, since: datetime) -> None:
        super().__init__(daemon=True)
        self.url, self.since = url, since
        self.samples: list[Sample] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        from django.db import connection

        watch = QueueWatch(self.url, handler_queues())
        start = time.monotonic()
        try:
            while not self.stopped.is_set():
                at = time.monotonic() - start
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*), count(*) FILTER (WHERE status = 'completed')"
                        " FROM adoptions_adoption WHERE created_at >= %s",
                        [self.since],
                    )
                    created, completed = cursor.fetchone()
                self.samples.append(Sample(at, created, completed, outbox_pending(), watch.depth()))
                self.stopped.wait(max(0.0, start + len(self.samples) - time.monotonic()))
        finally:
            watch.close()
            connection.close()

    def stop(self) -> list[Sample]:
        self.stopped.set()
        self.join(timeout=30)
        return self.samples
