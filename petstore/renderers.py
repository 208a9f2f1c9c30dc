"""The API's JSON renderer: snake_case in Python, camelCase on the wire.

djangorestframework-camel-case's renderer does the same, and its rule renames each key
here. Its walk, though, asks every scalar in an answer whether it is iterable by calling
iter() and catching the TypeError, and renames every key with a regex each time: for a page
of twenty pets that walk cost more than building the page. This one dispatches on the
container types an answer holds, and renames each distinct key once.
"""

from __future__ import annotations

import re
from functools import lru_cache

from django.utils.encoding import force_str
from django.utils.functional import Promise
from djangorestframework_camel_case.util import camelize_re, underscore_to_camel
from rest_framework.renderers import JSONRenderer


@lru_cache(maxsize=4096)  # keys are field names: a few hundred in the whole API
def camel_key(key: str) -> str:
    return re.sub(camelize_re, underscore_to_camel, key) if "_" in key else key


_PLAIN = frozenset({str, int, float, bool, type(None)})


def camelize(data):
    """Rename the keys of every dict in `data`, at any depth; other values pass as they are."""
    if type(data) in _PLAIN:  # most values: settled without a walk
        return data
    if isinstance(data, dict):
        return {
            camel_key(force_str(key)) if isinstance(key, str | Promise) else key: camelize(value)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple | set | frozenset):
        return [camelize(item) for item in data]
    if isinstance(data, Promise):  # a lazily translated message
        return force_str(data)
    return data


class CamelCaseJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        return super().render(camelize(data), accepted_media_type, renderer_context)
