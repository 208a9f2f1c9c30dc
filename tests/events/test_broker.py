"""Publisher-confirm bookkeeping, without a broker: only confirmed tags count."""

from events.broker import ConfirmingPublisher


def publisher_with_outstanding(tags) -> ConfirmingPublisher:
    publisher = ConfirmingPublisher("amqp://guest:guest@127.0.0.1:5672//")
    publisher._outstanding = set(tags)
    return publisher


def test_multiple_ack_in_a_later_batch_settles_only_that_batchs_tags_up_to_it():
    """Regression: tags of earlier batches used to count, ending the wait before the confirms."""
    publisher = publisher_with_outstanding(range(501, 1001))  # the second batch on a connection

    publisher._on_ack(600, True)

    assert publisher._outstanding == set(range(601, 1001))
    assert publisher._nacked == set()


def test_single_ack_and_nack_settle_one_tag_and_remember_the_nack():
    publisher = publisher_with_outstanding({7, 8, 9})

    publisher._on_ack(7, False)
    publisher._on_nack(9, False)

    assert publisher._outstanding == {8}
    assert publisher._nacked == {9}


def test_ack_for_an_unknown_tag_changes_nothing():
    publisher = publisher_with_outstanding({3})

    publisher._on_ack(2, False)

    assert publisher._outstanding == {3}
