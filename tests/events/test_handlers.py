"""Each handler's Celery task: the reliability options it runs with and the queue it goes to."""

import uuid

import pytest
from django.conf import settings

from events.broker import task_envelope
from events.handlers import HANDLERS
from petstore.celery import app

# The product's handlers, their queues and hard time limits (seconds). Tests may register
# handlers of their own for a while, named test.*.
EXPECTED = {
    "notifications.confirmation_email": ("emails", 60),
    "notifications.shelter_notice": ("shelter-notices", 60),
    "adoptions.inventory": ("inventory", 60),
    "notifications.certificate": ("certificates", 120),
    "adoptions.vet_appointment": ("vet-appointments", 60),
    "adoptions.welcome_package": ("welcome-packages", 60),
    "adoptions.analytics": ("analytics", 60),
}


def product_handlers() -> set[str]:
    return {name for name in HANDLERS if not name.startswith("test.")}


def test_the_handler_registry_holds_the_seven_steps_these_tests_check():
    assert product_handlers() == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_handler_task_acks_late_is_requeued_when_its_worker_dies_and_keeps_no_result(name):
    task = app.tasks[name]
    envelope = task_envelope(1, HANDLERS[name], uuid.uuid4())  # the message the relay publishes

    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.ignore_result is True
    # The message header would override the task's own ignore_result.
    assert envelope.properties["application_headers"]["ignore_result"] is True


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_handler_task_has_its_own_hard_time_limit_and_a_soft_limit_before_it(name):
    _, limit = EXPECTED[name]
    task = app.tasks[name]

    assert HANDLERS[name].time_limit == limit
    assert task.time_limit == limit
    assert task.soft_time_limit is not None and 0 < task.soft_time_limit < limit


def test_the_certificate_task_may_run_longer_than_any_other_step():
    others = [app.tasks[name].time_limit for name in EXPECTED if name != "notifications.certificate"]

    assert app.tasks["notifications.certificate"].time_limit > max(others)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_handler_task_goes_to_its_own_queue_whether_celery_or_the_relay_sends_it(name):
    queue, _ = EXPECTED[name]
    declared = {q.name: q for q in settings.CELERY_TASK_QUEUES}[queue]

    routed = app.amqp.router.route({}, name)["queue"]  # apply_async / send_task
    envelope = task_envelope(1, HANDLERS[name], uuid.uuid4())  # the relay's fan-out

    assert HANDLERS[name].queue == queue
    assert routed.name == queue
    assert (envelope.exchange, envelope.routing_key) == (declared.exchange.name, declared.routing_key)


def test_no_two_handlers_share_a_queue():
    queues = [HANDLERS[name].queue for name in product_handlers()]

    assert len(set(queues)) == len(queues) == 7


def test_a_task_that_is_no_handler_goes_to_the_default_queue():
    assert app.amqp.router.route({}, "petstore.ping")["queue"].name == settings.CELERY_TASK_DEFAULT_QUEUE
