"""The reference task for the handler figure: Celery's own cost per task, with no work."""

from celery import shared_task


@shared_task(name="bench.noop", ignore_result=True)
def noop(event_id: str) -> None:
    """Do nothing: takes an id like a handler's task, stores no result like a handler."""
