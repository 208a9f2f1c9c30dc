"""The API's JSON renderer: snake_case in Python, camelCase on the wire.

djangorestframework-camel-case's renderer does the same, and its rule renames each key
here. Its walk, though, asks every scalar in an answer whether it is iterable by calling
iter() and catching the TypeError, and renames every key with a regex each time: for a page
of twenty pets that walk cost more than building the page. This one dispatches on the
container types an answer holds, and renames each distinct key once.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from decimal import Decimal
from uuid import UUID

import orjson
from django.utils.encoding import force_str
from django.utils.functional import Promise
from djangorestframework_camel_case.util import camelize_re, underscore_to_camel
from rest_framework.renderers import JSONRenderer
from rest_framework.utils import encoders

#: Every str key renamed so far: keys are field names, a few hundred in the whole API. The walk
#: looks here before it calls anything (a page of twenty pets renames 180 keys).
_CAMEL_KEYS: dict[str, str] = {}


def camel_key(key: str) -> str:
    renamed = _CAMEL_KEYS.get(key)
    if renamed is None:
        renamed = re.sub(camelize_re, underscore_to_camel, key) if "_" in key else key
        if len(_CAMEL_KEYS) < 4096:
            _CAMEL_KEYS[key] = renamed
    return renamed


#: Values that hold no dict to rename: settled without a walk (most values of an answer).
_LEAVES = frozenset({str, int, float, bool, type(None), datetime, date, time, UUID, Decimal})


def camelize(data):
    """Rename the keys of every dict in `data`, at any depth; other values pass as they are."""
    if type(data) in _LEAVES:
        return data
    if isinstance(data, dict):
        known = _CAMEL_KEYS.get
        return {
            known(key) or _renamed(key): value if type(value) in _LEAVES else camelize(value)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple | set | frozenset):
        return [item if type(item) in _LEAVES else camelize(item) for item in data]
    if isinstance(data, Promise):  # a lazily translated message
        return force_str(data)
    return data


def _renamed(key):
    return camel_key(force_str(key)) if isinstance(key, str | Promise) else key


class CamelCaseJSONRenderer(JSONRenderer):
    """DRF's JSON, written by orjson: the standard library's encoder, calling back into Python
    for every date and UUID, took half of a page of twenty pets' rendering.

    Dates and times still go through DRF's encoder (orjson would drop the seconds of an old
    zone's offset), so the bytes are DRF's. Floats are the one difference, and none of our
    answers holds one: orjson writes 1e-7 where DRF writes 1e-07, and null for NaN, where
    DRF failed.
    """

    def render(self, data, accepted_media_type=None, renderer_context=None):
        data = camelize(data)
        if data is None or self.get_indent(accepted_media_type, renderer_context or {}):
            return super().render(data, accepted_media_type, renderer_context)  # pretty, on request
        try:
            body = orjson.dumps(data, default=_DRF_ENCODER.default, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:  # what orjson cannot write (an int past 64 bits): DRF can
            return super().render(data, accepted_media_type, renderer_context)
        # As DRF does, so that the answer is also valid JavaScript.
        return body.replace(_LINE_SEPARATOR, rb"\u2028").replace(_PARAGRAPH_SEPARATOR, rb"\u2029")


# Dates, times, Decimal, lazy text…: written by DRF's encoder, as DRF's renderer writes them.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_DRF_ENCODER = encoders.JSONEncoder()
_LINE_SEPARATOR, _PARAGRAPH_SEPARATOR = "\u2028".encode(), "\u2029".encode()
