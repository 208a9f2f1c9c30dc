"""Figure 7: end to end at 20 adoptions/s: from the 202 to `completed`, and the POST's latency.

Ours: gunicorn (3 sync workers), the relay and the Procfile's Celery workers (bench/stack.py) run while a
paced client (open loop) POSTs /api/adoptions at 20/s. An adoption's end-to-end time is
Adoption.completed_at - created_at (created_at is stamped inside the command's transaction,
a few ms before the 202 leaves): all seven steps succeeded, the certificate drawn as a real
PDF. After the last POST the run waits at most WAIT seconds; an adoption still not completed
then counts with the time it had waited so far, so a percentile that falls on one of them is
a lower bound (the notes say how many).
Reference for the end-to-end time: the seven steps' own run time for the same adoptions (sum
of their deliveries' started -> finished): what is left is waiting in the outbox and queues.
Reference for the POST latency: the same POSTs at the same rate on the same gunicorn with the
relay and the worker not running (their outbox rows are then dropped unsent).
Rounds alternate ours, reference, reference, ours; before each, VACUUM ANALYZE does what
autovacuum would (it is off on this machine's server).
"""

from __future__ import annotations

import math
import time

from .api import ADOPT_PATH, Gunicorn
from .harness import Bench, Figure, Goal, abba, log, percentile
from .loadgen import LoadResult, merge, run_python, weighted_percentile
from .stack import (
    CeleryWorker,
    RelayProcess,
    customer_with_token,
    declare_and_purge,
    outbox_skip_pending,
    outcome,
    pets_register,
    vacuum_analyze,
    wait_until_completed,
)

RATE = 20.0
CLIENTS = 8
POST_REFERENCE = "the same POSTs at the same rate with the relay and the worker not running"
E2E_REFERENCE = "the seven steps' own run time, same adoptions (sum of delivery started -> finished)"


def run(bench: Bench) -> list[Figure]:
    url = bench.broker_url
    rounds, seconds, wait = int(bench.scale(2, 1)), bench.scale(15, 8), bench.scale(20, 10)
    declare_and_purge(url)
    customer = customer_with_token("bench-e2e")
    per_round = int(RATE * seconds) + 10
    log(f"e2e: registering {per_round * (rounds * 2 + 1)} pets")
    pets = pets_register(per_round * (rounds * 2 + 1))
    posts: dict[str, list[LoadResult]] = {"ours": [], "ref": []}
    e2e, work, late = [], [], 0
    with Gunicorn() as server:
        token, url_post = customer.token, server.url(ADOPT_PATH)
        warm, pets = pets[:per_round], pets[per_round:]
        _post(url_post, token, warm[:40], 2)  # warm-up: the workers' first requests are slower
        outbox_skip_pending()
        for index, side in abba(rounds):
            ids, pets = pets[:per_round], pets[per_round:]
            vacuum_analyze()
            log(f"e2e: round {index + 1}, {side}, {RATE:g} adoptions/s for {seconds:g} s")
            if side == "ref":  # the relay and the worker are not running
                posts[side].append(_post(url_post, token, ids, seconds))
                outbox_skip_pending()  # never published: a later relay must not send them
                continue
            with RelayProcess(), CeleryWorker(url).running():
                result = _post(url_post, token, ids, seconds)
                posts[side].append(result)
                waited = wait_until_completed(ids, expected=result.ok, timeout=wait)
                deadline = time.time()
            declare_and_purge(url)  # a backlog left after WAIT must not reach the next round
            outbox_skip_pending()
            round_e2e, round_work, round_late = _round_times(ids, deadline)
            e2e, work, late = e2e + round_e2e, work + round_work, late + round_late
            drained = (
                f"all completed {waited:.1f} s"
                if waited <= wait
                else f"{round_late} not completed {wait:g} s"
            )
            p50 = percentile(round_e2e, 50)
            log(f"e2e: {result.ok} adoptions, {drained} after the last POST; p50 {p50:.2f} s")
    return _figures(merge(posts["ours"]), merge(posts["ref"]), e2e, work, late, wait)


def _post(url: str, token: str, ids: list[str], seconds: float) -> LoadResult:
    return run_python(url, token, ids, seconds=seconds, clients=CLIENTS, rate=RATE)


def _round_times(pet_ids: list[str], deadline: float) -> tuple[list[float], list[float], int]:
    """End-to-end seconds per adoption (the unfinished ones: waited so far), step seconds."""
    result = outcome(pet_ids)
    unfinished = [deadline - created for created in result.unfinished_created]
    return result.e2e + unfinished, result.work, len(unfinished)


def _figures(
    ours: LoadResult, ref: LoadResult, e2e: list[float], work: list[float], late: int, wait: float
) -> list[Figure]:
    def ms(result: LoadResult, p: float) -> float:
        return weighted_percentile(result.latencies, p) * 1000

    def bound(p: float) -> str:
        """Whether percentile p falls on an adoption that had not completed (a lower bound)."""
        rank = max(1, math.ceil(p / 100 * len(e2e)))
        return f"p{p:g} is a lower bound" if rank > len(e2e) - late else f"p{p:g} is measured"

    e2e_notes = [
        f"{len(e2e)} adoptions at {RATE:g}/s, {late} not completed {wait:g} s after the last POST "
        f"(counted with the time they had waited): {bound(50)}, {bound(99)}",
        f"max {max(e2e, default=math.nan):.2f} s; steps' own time p50 {percentile(work, 50):.3f} s",
    ]
    post_notes = [
        f"with side effects: {ours.ok} ok, {ours.failed} failed; without: {ref.ok} ok, {ref.failed} failed"
    ]
    return [
        Figure(
            f"202->completed p50 @{RATE:g}/s",
            percentile(e2e, 50),
            "s",
            percentile(work, 50),
            E2E_REFERENCE,
            Goal("value", "<=", 1, "s"),
            e2e_notes,
        ),
        Figure(
            f"202->completed p99 @{RATE:g}/s",
            percentile(e2e, 99),
            "s",
            percentile(work, 99),
            E2E_REFERENCE,
            Goal("value", "<=", 3, "s"),
        ),
        Figure(
            f"POST p50 @{RATE:g}/s, side effects running",
            ms(ours, 50),
            "ms",
            ms(ref, 50),
            POST_REFERENCE,
            Goal("ratio", "<=", 1.2),
            post_notes,
        ),
        Figure(
            f"POST p99 @{RATE:g}/s, side effects running",
            ms(ours, 99),
            "ms",
            ms(ref, 99),
            POST_REFERENCE,
            Goal("ratio", "<=", 1.2),
        ),
    ]
