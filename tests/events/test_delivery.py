"""Running handlers: once in effect, retries in the outbox, dead letters and redrive."""

import dataclasses
import io
import uuid
from datetime import timedelta

import pytest
from celery import current_app
from django.core.management import call_command
from django.utils import timezone

from events.catalogue import PetNameChanged
from events.context import CommandContext
from events.delivery import deliver, recover_stalled, retry_delay
from events.handlers import HANDLERS, PermanentFailure, event_handler
from events.models import Delivery, OutboxMessage, StoredEvent
from events.store import append
from tests.support.threads import wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def flaky_handler(settings):
    """A handler on PetNameChanged (no real handler uses it) that fails while told to."""
    settings.HANDLER_MAX_ATTEMPTS = 3
    calls, settled = [], []
    behaviour = {"fail": False}

    def run(event):
        calls.append(event.event_id)
        if behaviour["fail"] == "kills the worker":
            raise WorkerDied
        if behaviour["fail"] == "for good":
            raise PermanentFailure("the address does not exist")
        if behaviour["fail"]:
            raise RuntimeError("service down")

    event_handler(
        name="test.flaky",
        on=("PetNameChanged",),
        queue="analytics",
        on_settled=lambda delivery: settled.append(delivery.status),
    )(run)
    yield HANDLERS["test.flaky"], calls, settled, behaviour
    del HANDLERS["test.flaky"]
    current_app.tasks.pop("test.flaky", None)  # the next test registers its own task


class WorkerDied(BaseException):
    """Stands in for the worker process dying mid-handler (os._exit, an OOM kill): nothing of
    the attempt is recorded, and the message comes back (reject_on_worker_lost)."""


def renamed_event() -> StoredEvent:
    [row] = append(
        stream_type="pet",
        stream_id=uuid.uuid4(),
        expected_version=1,
        events=[PetNameChanged(old_name="A", new_name="B")],
        metadata=CommandContext.system().as_metadata(),
    )
    return row


def claimed_and_left_running(handler, *, started_at=None) -> StoredEvent:
    """An event whose delivery is `running` since `started_at` (now): a pool process claimed it
    and is still in the step, or died in it."""
    event = renamed_event()
    Delivery.objects.create(
        handler=handler.name,
        event_id=event.event_id,
        event_type=event.event_type,
        status="running",
        attempts=1,
        started_at=started_at or timezone.now(),
    )
    return event


def test_handler_runs_once_and_a_redelivery_is_skipped(flaky_handler):
    handler, calls, settled, _ = flaky_handler
    event = renamed_event()

    first = deliver(handler.name, event.event_id)
    again = deliver(handler.name, event.event_id)

    assert (first, again) == ("succeeded", "skipped")
    assert calls == [event.event_id]
    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert delivery.status == "succeeded" and delivery.attempts == 1
    assert settled == ["succeeded"]


def test_failure_is_retried_through_the_outbox_then_dead(flaky_handler):
    handler, calls, settled, behaviour = flaky_handler
    behaviour["fail"] = True
    event = renamed_event()

    statuses = [deliver(handler.name, event.event_id) for _ in range(3)]

    assert statuses == ["failed", "failed", "dead"]
    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert delivery.attempts == 3 and "service down" in delivery.last_error
    retries = OutboxMessage.objects.filter(handler=handler.name, event_id=event.event_id)
    assert retries.count() == 2  # one scheduled retry per failed attempt before the last
    assert all(r.available_at > r.created_at for r in retries)  # delays live in the database
    assert settled == ["dead"]
    assert deliver(handler.name, event.event_id) == "skipped"  # dead stays dead until redriven


def test_an_operators_attempt_limit_for_one_handler_replaces_the_default(flaky_handler, settings):
    handler, _, settled, behaviour = flaky_handler
    behaviour["fail"] = True
    settings.HANDLER_ATTEMPT_LIMITS = {handler.name: 2}
    event = renamed_event()

    statuses = [deliver(handler.name, event.event_id) for _ in range(2)]

    assert statuses == ["failed", "dead"]
    assert Delivery.objects.get(handler=handler.name, event_id=event.event_id).attempts == 2
    assert settled == ["dead"]


def test_a_handler_may_declare_its_own_attempt_limit(flaky_handler):
    handler, _, _, _ = flaky_handler

    assert handler.attempts_allowed == 3  # HANDLER_MAX_ATTEMPTS, as the fixture sets it
    assert dataclasses.replace(handler, max_attempts=5).attempts_allowed == 5


def test_a_delivery_that_keeps_killing_its_worker_goes_dead_instead_of_looping(flaky_handler):
    handler, calls, settled, behaviour = flaky_handler
    behaviour["fail"] = "kills the worker"
    event = renamed_event()
    for _ in range(3):  # HANDLER_MAX_ATTEMPTS, each redelivered after its worker died
        with pytest.raises(WorkerDied):
            deliver(handler.name, event.event_id)

    assert deliver(handler.name, event.event_id) == "dead"

    assert len(calls) == 3  # not run a fourth time
    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert (delivery.status, delivery.attempts) == ("dead", 4)
    assert "WorkerLost: gave up after 3 attempts" in delivery.last_error
    assert settled == ["dead"]
    assert deliver(handler.name, event.event_id) == "skipped"


def test_redrive_gives_a_dead_delivery_fresh_attempts(flaky_handler):
    handler, calls, settled, behaviour = flaky_handler
    behaviour["fail"] = True
    event = renamed_event()
    for _ in range(3):
        deliver(handler.name, event.event_id)
    behaviour["fail"] = False

    call_command("redrive_dead_letters", "--handler", handler.name)

    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert delivery.status == "pending"
    scheduled = OutboxMessage.objects.filter(handler=handler.name).order_by("-id").first()
    assert scheduled.available_at <= timezone.now()
    assert deliver(handler.name, event.event_id) == "succeeded"
    assert settled == ["dead", "pending", "succeeded"]  # redrive tells the handler too


def test_unreadable_stored_payload_goes_dead_at_once_with_the_validation_error(flaky_handler):
    handler, calls, *_ = flaky_handler
    broken = StoredEvent.objects.create(
        stream_type="pet",
        stream_id=uuid.uuid4(),
        stream_version=1,
        event_type="PetNameChanged",
        schema_version=1,
        payload={"new_name": ""},
        recorded_at=timezone.now(),
    )

    assert deliver(handler.name, broken.event_id) == "dead"

    delivery = Delivery.objects.get(handler=handler.name, event_id=broken.event_id)
    assert "PetNameChanged v1 does not match its schema" in delivery.last_error and delivery.attempts == 1
    assert calls == []  # never half-processed


def test_unknown_event_is_acknowledged_and_listed_dead_for_staff(flaky_handler):
    handler, calls, settled, _ = flaky_handler
    unknown = uuid.uuid4()

    assert deliver(handler.name, unknown) == "unknown_event"
    assert deliver(handler.name, unknown) == "unknown_event"  # the same message again

    [delivery] = Delivery.objects.all()
    assert (delivery.handler, delivery.event_id, delivery.status) == (handler.name, unknown, "dead")
    assert delivery.last_error == f"event {unknown} is not in the event log; the message was acknowledged"
    assert calls == [] and settled == []


def test_a_delivery_left_running_past_its_time_limit_is_retried(flaky_handler, settings):
    handler, calls, settled, _ = flaky_handler
    settings.DELIVERY_STALL_MARGIN_SECONDS = 0
    event = claimed_and_left_running(
        handler, started_at=timezone.now() - timedelta(seconds=handler.time_limit + 1)
    )

    assert recover_stalled() == 1

    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert delivery.status == "failed" and "TimeoutError" in delivery.last_error
    assert OutboxMessage.objects.filter(handler=handler.name, event_id=event.event_id).exists()
    assert deliver(handler.name, event.event_id) == "succeeded"


def test_a_recent_running_delivery_is_left_alone(flaky_handler):
    handler, *_ = flaky_handler
    claimed_and_left_running(handler)

    assert recover_stalled() == 0


def advisory_locks_held(pid: int | None = None) -> int:
    """Advisory locks a backend holds (this test's own by default). pg_locks is read live;
    pg_stat_activity would be a snapshot held for the test's transaction."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = coalesce(%s, pg_backend_pid())",
            [pid],
        )
        return cursor.fetchone()[0]


def test_a_delivery_running_elsewhere_is_put_off_and_the_lock_never_outlives_a_run(
    flaky_handler, require_postgres
):
    import psycopg
    from django.db import connection

    from events.delivery import _lock_key

    handler, calls, _, _ = flaky_handler
    event = renamed_event()
    scheduled = OutboxMessage.objects.filter(event_id=event.event_id, handler=handler.name)
    before = scheduled.count()
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other_worker:
        other_worker.execute("SELECT pg_advisory_lock(%s)", [_lock_key(handler.name, event.event_id)])
        assert deliver(handler.name, event.event_id) == "busy"
        assert calls == [] and not Delivery.objects.filter(event_id=event.event_id).exists()
        assert scheduled.count() == before + 1  # put off, to run again in a moment
        other_pid = other_worker.info.backend_pid

    # The server drops a closed session's locks when its backend exits, a moment after the close.
    wait_until(lambda: advisory_locks_held(other_pid) == 0, timeout=10, what="the closed session's lock")
    assert deliver(handler.name, event.event_id) == "succeeded"  # the other worker went away
    assert deliver(handler.name, uuid.uuid4()) == "unknown_event"
    assert calls == [event.event_id] and advisory_locks_held() == 0


def test_a_permanent_failure_is_dead_at_once_without_retries(flaky_handler):
    handler, calls, settled, behaviour = flaky_handler
    event = renamed_event()
    behaviour["fail"] = "for good"
    scheduled = OutboxMessage.objects.filter(event_id=event.event_id, handler=handler.name)
    before = scheduled.count()

    assert deliver(handler.name, event.event_id) == "dead"

    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert (delivery.status, delivery.attempts) == ("dead", 1)
    assert "PermanentFailure: the address does not exist" in delivery.last_error
    assert scheduled.count() == before and settled == ["dead"]  # no retry was scheduled
    assert deliver(handler.name, event.event_id) == "skipped" and len(calls) == 1


def dead_delivery(handler) -> StoredEvent:
    """An event whose delivery to `handler` went dead (the flaky handler failing for good)."""
    event = renamed_event()
    assert deliver(handler.name, event.event_id) == "dead"
    return event


def test_redrive_command_with_an_event_id_redrives_only_that_events_dead_deliveries(flaky_handler):
    handler, calls, settled, behaviour = flaky_handler
    behaviour["fail"] = "for good"
    chosen, other = dead_delivery(handler), dead_delivery(handler)
    behaviour["fail"] = False
    out = io.StringIO()

    call_command("redrive_dead_letters", "--event-id", str(chosen.event_id), stdout=out)

    statuses = dict(Delivery.objects.filter(handler=handler.name).values_list("event_id", "status"))
    assert statuses == {chosen.event_id: "pending", other.event_id: "dead"}
    assert out.getvalue().strip() == "redriven 1 dead deliveries"
    due = OutboxMessage.objects.filter(handler=handler.name, available_at__lte=timezone.now())
    assert list(due.values_list("event_id", flat=True)) == [chosen.event_id]
    assert deliver(handler.name, chosen.event_id) == "succeeded"
    assert deliver(handler.name, other.event_id) == "skipped"  # still dead until redriven itself


def delays(attempts: int, draws: int = 200) -> list[float]:
    return [retry_delay(attempts).total_seconds() for _ in range(draws)]


def test_retry_delay_range_doubles_with_each_attempt(settings):
    settings.HANDLER_RETRY_BASE_SECONDS, settings.HANDLER_RETRY_MAX_SECONDS = 1.0, 10_000.0

    for attempts in range(1, 9):
        ceiling = 2.0 ** (attempts - 1)
        drawn = delays(attempts)
        assert ceiling / 2 <= min(drawn) and max(drawn) <= ceiling, (attempts, min(drawn), max(drawn))
    # Seen from both ends: every 8th-attempt delay is longer than any 5th-attempt one.
    assert min(delays(8)) > max(delays(5))


def test_retry_delays_are_jittered_so_failed_deliveries_do_not_retry_in_step(settings):
    settings.HANDLER_RETRY_BASE_SECONDS, settings.HANDLER_RETRY_MAX_SECONDS = 5.0, 600.0

    drawn = delays(3, draws=50)

    assert len(set(drawn)) > 40  # uniform floats: equal draws would be a broken jitter
    assert max(drawn) - min(drawn) > 5  # spread over the range [10, 20], not a wobble


def test_retry_delay_is_capped_by_the_configured_maximum(settings):
    settings.HANDLER_RETRY_BASE_SECONDS, settings.HANDLER_RETRY_MAX_SECONDS = 5.0, 60.0

    for attempts in (5, 6, 20, 200, 5000):  # 5 s doubled reaches 80 s at the 5th attempt
        drawn = delays(attempts)
        assert 30.0 <= min(drawn) and max(drawn) <= 60.0, (attempts, min(drawn), max(drawn))


def test_a_succeeding_task_lets_go_of_its_lock_in_the_statement_that_records_it(
    flaky_handler, require_postgres
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    handler, calls, _, _ = flaky_handler
    event = renamed_event()

    with CaptureQueriesContext(connection) as queries:
        assert deliver(handler.name, event.event_id) == "succeeded"

    statements = [query["sql"] for query in queries]
    assert not [sql for sql in statements if sql.startswith("SELECT pg_advisory_unlock")]
    [recorded] = [sql for sql in statements if "RETURNING pg_advisory_unlock" in sql]
    assert recorded.startswith('UPDATE "event_delivery"')
    assert calls == [event.event_id] and advisory_locks_held() == 0


@pytest.fixture
def settling_fails(flaky_handler):
    """The flaky handler, whose owner fails to hear of a success (after the lock was let go);
    `also` runs first, in that moment."""
    handler, calls, _, _ = flaky_handler
    also = []

    def fail(delivery):
        if delivery.status == "succeeded":
            for action in also:
                action()
            raise RuntimeError("the owner's write failed")

    HANDLERS[handler.name] = failing = dataclasses.replace(handler, on_settled=fail)
    return failing, calls, also


def test_a_success_that_fails_after_letting_go_of_the_lock_is_recorded_as_a_failed_attempt(
    settling_fails, require_postgres
):
    handler, calls, _ = settling_fails
    event = renamed_event()

    assert deliver(handler.name, event.event_id) == "failed"  # retried later, as any failure

    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "the owner's write failed" in delivery.last_error
    assert OutboxMessage.objects.filter(event_id=event.event_id, handler=handler.name).exists()
    assert calls == [event.event_id] and advisory_locks_held() == 0


def test_a_success_that_fails_after_a_copy_took_the_lock_is_left_to_the_copy(
    settling_fails, require_postgres
):
    import psycopg
    from django.db import connection

    from events.delivery import _lock_key

    handler, calls, also = settling_fails
    event = renamed_event()
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as copy:
        # A copy of the message claims the delivery between the early unlock and the failure.
        also.append(
            lambda: copy.execute("SELECT pg_advisory_lock(%s)", [_lock_key(handler.name, event.event_id)])
        )

        assert deliver(handler.name, event.event_id) == "busy"

        delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
        assert (delivery.status, delivery.attempts) == ("running", 1)  # the copy will record it
        assert not OutboxMessage.objects.filter(event_id=event.event_id, handler=handler.name).exists()
        assert calls == [event.event_id]
        assert advisory_locks_held() == 0  # ours; the copy holds its own


def test_a_step_past_its_soft_time_limit_is_recorded_with_the_limit(flaky_handler):
    from celery.exceptions import SoftTimeLimitExceeded

    handler, _, _, _ = flaky_handler

    def slow(event):
        raise SoftTimeLimitExceeded()  # what Celery raises inside a step past its soft limit

    HANDLERS[handler.name] = dataclasses.replace(handler, run=slow, time_limit=30)
    event = renamed_event()

    assert deliver(handler.name, event.event_id) == "failed"
    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert delivery.last_error == "SoftTimeLimitExceeded: ran past its soft time limit of 25s"


def test_a_hard_time_limit_schedules_the_next_attempt_at_once_and_says_why(flaky_handler):
    from events.delivery import hard_time_limit_reached

    handler, _, _, _ = flaky_handler
    event = claimed_and_left_running(handler)

    hard_time_limit_reached(handler.name, event.event_id)

    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert (delivery.status, delivery.attempts) == ("running", 1)  # the next claim counts it
    assert delivery.last_error == (
        f"TimeLimitExceeded: ran past its hard time limit of {handler.time_limit}s; its process was ended"
    )
    [retry] = OutboxMessage.objects.filter(event_id=event.event_id, handler=handler.name)
    assert retry.available_at > timezone.now()  # after the usual backoff


def test_a_step_that_finished_after_all_gets_no_other_attempt(flaky_handler):
    from events.delivery import hard_time_limit_reached

    handler, _, _, _ = flaky_handler
    event = renamed_event()
    assert deliver(handler.name, event.event_id) == "succeeded"

    hard_time_limit_reached(handler.name, event.event_id)

    assert not OutboxMessage.objects.filter(event_id=event.event_id, handler=handler.name).exists()


@pytest.mark.django_db(transaction=True)
def test_a_hard_time_limit_never_waits_for_the_row_the_step_still_holds(flaky_handler, require_postgres):
    """The pool process is ended only after the worker's main process returns: waiting for its
    row lock would wait for ever. The next attempt is scheduled all the same."""
    import time

    import psycopg
    from django.db import connection

    from events.delivery import hard_time_limit_reached

    handler, _, _, _ = flaky_handler
    event = claimed_and_left_running(handler)
    with psycopg.connect(**connection.get_connection_params()) as pool_process:  # in a transaction
        pool_process.execute("SELECT 1 FROM event_delivery WHERE event_id = %s FOR UPDATE", [event.event_id])
        started = time.monotonic()
        hard_time_limit_reached(handler.name, event.event_id)
        assert time.monotonic() - started < 2

    delivery = Delivery.objects.get(handler=handler.name, event_id=event.event_id)
    assert delivery.last_error == ""  # the row was busy: only the error text is lost
    assert OutboxMessage.objects.filter(event_id=event.event_id, handler=handler.name).count() == 1
