"""Celery tasks of the events app."""

from celery import shared_task


@shared_task(name="petstore.ping")
def ping() -> str:
    """Answer "pong": lets operators and tests see that a worker consumes from the broker."""
    return "pong"
