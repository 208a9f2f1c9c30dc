"""The web worker's heap is frozen after start-up and again after its first request."""

import gc
import weakref

import pytest
from django.core.signals import request_finished

from petstore import heap


class Node:
    pass


def in_a_walked_generation(obj) -> bool:
    return any(o is obj for o in gc.get_objects())  # the frozen generation is not among them


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()
    request_finished.disconnect(dispatch_uid=heap._FIRST_REQUEST)


def test_what_start_up_built_is_frozen_at_once(unfrozen):
    built_at_start_up = Node()
    assert in_a_walked_generation(built_at_start_up)

    heap.freeze_after_first_request()

    assert not in_a_walked_generation(built_at_start_up)
    assert gc.get_freeze_count() > 0


@pytest.mark.django_db  # request_finished's other receivers close old database connections
def test_the_first_request_freezes_what_it_loaded_and_later_ones_do_not(unfrozen):
    heap.freeze_after_first_request()
    loaded_by_the_first_request = Node()
    request_finished.send(sender=None)
    assert not in_a_walked_generation(loaded_by_the_first_request)

    made_by_a_later_request = Node()
    request_finished.send(sender=None)
    assert in_a_walked_generation(made_by_a_later_request)


def test_garbage_in_cycles_is_freed_not_frozen(unfrozen):
    gc.disable()  # so that only the freeze's own collection can free it
    try:
        cycle = Node()
        cycle.itself = cycle
        still_there = weakref.ref(cycle)
        del cycle
        assert still_there() is not None

        heap.freeze_after_first_request()

        assert still_there() is None
    finally:
        gc.enable()
