"""Test helpers that stand in for the operator: a broker we can cut off, queues we can read."""
