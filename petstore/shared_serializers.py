"""DRF serializers used without building one per request.

A serializer made per request deep-copies its declared fields, which cost a tenth of a short
answer. Checking input or shaping output keeps nothing on the serializer: run_validation
returns the data or raises the ValidationError is_valid would (but for a body of `null`,
which is_valid words as a whole; so does `validated`), to_representation returns what .data
holds. So one instance per class serves every request (none of ours reads a
context).
"""

from __future__ import annotations

from functools import cache

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.settings import api_settings


def validated(serializer_class: type[serializers.Serializer], data) -> dict:
    """The data as the serializer validates it; a ValidationError (a 400) names each field."""
    if data is None:  # a body of `null`: is_valid's words (Serializer.errors), not a field's
        raise serializers.ValidationError(
            {api_settings.NON_FIELD_ERRORS_KEY: [ErrorDetail("No data provided", code="null")]}
        )
    return _shared(serializer_class).run_validation(data)


def represented(serializer_class: type[serializers.Serializer], instance) -> dict:
    """What serializer_class(instance).data would hold."""
    return _shared(serializer_class).to_representation(instance)


@cache
def _shared(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    return serializer_class()


class UUIDText(serializers.UUIDField):
    """A UUID written as text, as JSON carries one. DRF's own field also takes a number
    (123 becomes 00000000-0000-0000-0000-00000000007b), which no client means."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)
