"""DRF serializers used without building one per request.

A serializer made per request deep-copies its declared fields, which cost a tenth of a short
answer. Checking input or shaping output keeps nothing on the serializer: run_validation
returns the data or raises the same ValidationError as is_valid, to_representation returns
what .data holds. So one instance per class serves every request (none of ours reads a
context).
"""

from __future__ import annotations

from functools import cache

from rest_framework import serializers


def validated(serializer_class: type[serializers.Serializer], data) -> dict:
    """The data as the serializer validates it; a ValidationError (a 400) names each field."""
    return _shared(serializer_class).run_validation(data)


def represented(serializer_class: type[serializers.Serializer], instance) -> dict:
    """What serializer_class(instance).data would hold."""
    return _shared(serializer_class).to_representation(instance)


@cache
def _shared(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    return serializer_class()
