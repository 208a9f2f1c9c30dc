"""Figure 5: handler throughput, tasks/s, of a Celery worker draining a backlog of adoption steps.

Ours: adoptions made through the real command (services.pet_adopt) while no worker runs; the
relay publishes their fan-out (events.relay.Relay.drain: each PetAdopted event and one task
per handler, seven, each to its handler's queue). Then the worker starts, and the drain is
timed from the first message it takes to the last of the seven deliveries of every adoption
settled: each step through events.delivery.deliver (advisory lock, delivery row, the step,
adoption_progress), emails rendered, certificates drawn as real PDFs.
Workers: the Procfile's two (bench/stack.py), `worker` and `certificates`, started together.
Reference: the same worker commands draining as many no-op Celery tasks (bench.noop, sent with
apply_async, spread over the same seven queues): Celery's and RabbitMQ's own cost per task.
Rounds alternate ours, reference, reference, ours; each drain starts a fresh worker.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass

from .harness import Bench, Figure, abba, log
from .stack import (
    CeleryWorker,
    CpuMeter,
    QueueWatch,
    adoption_steps,
    busiest_others,
    cpu_ms_per,
    cpu_note,
    customer_with_token,
    declare_and_purge,
    handler_queues,
    outbox_skip_pending,
    pets_register,
    purge_unrouted,
    worker_description,
)

REFERENCE = "Celery no-op task (bench.noop) drained by the same workers, same seven queues"


@dataclass
class Drain:
    tasks: int
    seconds: float
    cpu: dict[str, float]  # CPU ms per task by component
    settled: int  # tasks that reached an end (for ours: deliveries succeeded or dead)
    others: str = ""  # the busiest processes outside the system, while it drained

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


def run(bench: Bench) -> list[Figure]:
    rounds = int(bench.scale(2, 1))
    adoptions = int(bench.scale(100, 50))
    noops = int(bench.scale(3000, 1500))  # no-op drains are short: more tasks, a steadier rate
    url = bench.broker_url
    declare_and_purge(url)
    customer = customer_with_token("bench-handlers")
    log(f"handlers: registering {adoptions * rounds} pets")
    pets = pets_register(adoptions * rounds)
    began = time.time()  # the step times in the notes are this figure's own
    drains: dict[str, list[Drain]] = {"ours": [], "ref": []}
    for index, side in abba(rounds):
        if side == "ours":
            batch, pets = pets[:adoptions], pets[adoptions:]
            log(f"handlers: round {index + 1}, ours: {adoptions} adoptions, relay publishes the steps")
            drains[side].append(steps_drain(url, batch, customer.customer_id))
        else:
            log(f"handlers: round {index + 1}, reference: {noops} no-op tasks")
            drains[side].append(noop_drain(url, noops))
        last = drains[side][-1]
        log(f"handlers: {side}: {last.rate:.0f} tasks/s ({last.seconds:.1f} s); {last.others}")
    ours, ref = _pool(drains["ours"]), _pool(drains["ref"])
    bench.measured.update(
        handler_tasks_per_s=ours.rate, noop_tasks_per_s=ref.rate, noop_cpu_ms=ref.cpu["total"]
    )
    return _figures(ours, ref, rounds, adoptions, began)


def _figures(ours: Drain, ref: Drain, rounds: int, adoptions: int, began: float) -> list[Figure]:
    notes = [
        f"{rounds} round(s) per side of {adoptions} adoptions ({adoptions * adoption_steps()} tasks) / "
        f"{ref.tasks // rounds} no-op tasks; {worker_description()}",
        f"ours: {ours.settled} of {ours.tasks} deliveries settled; {_step_times(since=began)}",
        f"= {ours.rate / adoption_steps():.1f} adoptions/s if the worker had the machine to itself "
        f"(50 adoptions/s would need {50 * adoption_steps()} tasks/s)",
        cpu_note(ours.cpu, "handler task"),
        cpu_note(ref.cpu, "no-op task"),
    ]
    cpu_label = "CPU of all processes per no-op task, same drains"
    return [
        Figure(
            f"handler tasks drained ({adoption_steps()} steps)",
            ours.rate,
            "tasks/s",
            ref.rate,
            REFERENCE,
            notes=notes,
        ),
        Figure("handler task CPU, all processes", ours.cpu["total"], "ms", ref.cpu["total"], cpu_label),
    ]


def _pool(drains: list[Drain]) -> Drain:
    tasks = sum(d.tasks for d in drains)
    cpu = {
        name: sum(d.cpu[name] * d.tasks for d in drains) / tasks for name in drains[0].cpu
    }  # weighted by tasks
    others = " | ".join(d.others for d in drains)
    return Drain(tasks, sum(d.seconds for d in drains), cpu, sum(d.settled for d in drains), others)


# ----------------------------------------------------------------------------- backlogs


def steps_drain(url: str, pet_ids: list[str], customer_id: uuid.UUID) -> Drain:
    """Adopt the pets, publish their steps with the relay, then time a worker's drain."""
    from adoptions import services
    from adoptions.models import Customer
    from events.broker import ConfirmingPublisher
    from events.context import CommandContext
    from events.relay import Relay

    customer = Customer.objects.get(id=customer_id)
    for pet_id in pet_ids:
        services.pet_adopt(pet_id=uuid.UUID(pet_id), customer=customer, context=CommandContext.system())
    relay = Relay(ConfirmingPublisher())
    try:
        relay.drain(timeout=120)
    finally:
        relay.publisher.close()
    purge_unrouted(url)
    tasks, before = len(pet_ids) * adoption_steps(), _settled_count()
    drain = _drain(url, tasks, lambda: _settled_count() - before, poll=0.2)
    outbox_skip_pending()  # retries of failed steps (none expected) are not replayed
    return drain


def noop_drain(url: str, tasks: int) -> Drain:
    """Send `tasks` no-op tasks over the seven handler queues, then time a worker's drain."""
    from bench.reference_app.tasks import noop

    queues = handler_queues()
    for n in range(tasks):
        noop.apply_async(args=[str(uuid.uuid4())], queue=queues[n % len(queues)])
    watch = QueueWatch(url, queues)
    try:
        return _drain(url, tasks, lambda: tasks - watch.depth(), poll=0.05)
    finally:
        watch.close()


def _settled_count() -> int:
    from events.models import Delivery

    return Delivery.objects.filter(
        event_type="PetAdopted", status__in=[Delivery.Status.SUCCEEDED, Delivery.Status.DEAD]
    ).count()


# ----------------------------------------------------------------------------- the drain


def _drain(url: str, tasks: int, settled, *, poll: float, timeout: float = 300) -> Drain:
    """Start a worker on the backlog; time it from the first message taken until all settled.

    settled() returns how many of the `tasks` have finished so far.
    """
    watch = QueueWatch(url, handler_queues())
    initial = watch.depth()
    worker, meter = CeleryWorker(url), CpuMeter()
    with worker.running(wait=False):
        meter.trees.update(worker.trees)
        while watch.depth() >= initial:  # the worker is still starting up
            worker.check_alive()
            time.sleep(0.02)
        start, before = time.monotonic(), meter.snapshot()
        while (count := settled()) < tasks:
            if time.monotonic() - start > timeout:
                log(f"handlers: only {count} of {tasks} tasks settled after {timeout:.0f} s")
                break
            time.sleep(poll)
        after = meter.snapshot()
        elapsed = time.monotonic() - start
    watch.close()
    return Drain(tasks, elapsed, cpu_ms_per(before, after, tasks), count, busiest_others(before, after))


def _step_times(*, since: float) -> str:
    """Median run time of each step (delivery started -> finished), from the delivery rows."""
    from datetime import UTC, datetime

    from django.db.models import F

    from events.models import Delivery

    started = datetime.fromtimestamp(since, UTC)
    rows = (
        Delivery.objects.filter(
            event_type="PetAdopted", status=Delivery.Status.SUCCEEDED, started_at__gte=started
        )
        .annotate(took=F("finished_at") - F("started_at"))
        .values_list("handler", "took")
    )
    by_handler: dict[str, list[float]] = {}
    for handler, took in rows:
        by_handler.setdefault(handler, []).append(took.total_seconds() * 1000)
    parts = [
        f"{name.split('.')[-1]} {statistics.median(times):.1f}"
        for name, times in sorted(by_handler.items(), key=lambda item: -statistics.median(item[1]))
    ]
    return "median ms per step (delivery started -> finished): " + ", ".join(parts)
