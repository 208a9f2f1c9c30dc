"""The API's JSON parser: camelCase in, with a body-size limit DRF would otherwise skip.

Kept apart from api_errors: DRF resolves DEFAULT_PARSER_CLASSES while rest_framework.views
is being imported, so this module must not import DRF's views itself (a circular import that
surfaced as "CSRF failure view could not be imported" whenever the CSRF check ran first).
"""

from __future__ import annotations

import json

from django.conf import settings
from djangorestframework_camel_case.parser import CamelCaseJSONParser
from djangorestframework_camel_case.util import camel_to_underscore, underscoreize
from rest_framework import exceptions, status


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class LimitedCamelCaseJSONParser(CamelCaseJSONParser):
    """camelCase JSON parser that refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE, charsets that
    are not text encodings, and objects that name one field twice.

    DRF reads the stream directly, so Django's own body-size check never runs for JSON.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context.get("request")
        length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise PayloadTooLarge()
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.loads(stream.read().decode(encoding), object_pairs_hook=_fields_named_once)
            return underscoreize(data, **self.json_underscoreize)
        except LookupError:  # charset=rot13, base64, zlib…: codecs, but not of text
            raise exceptions.UnsupportedMediaType(media_type, f'Unsupported charset "{encoding}".') from None
        except ValueError as error:  # malformed JSON, or bytes that are not in the charset
            raise exceptions.ParseError(f"JSON parse error - {error}") from None
        except RecursionError:  # a few hundred nested arrays: renaming their keys recurses
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None


class DuplicateField(exceptions.ParseError):
    default_code = "duplicate_field"


def _fields_named_once(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object as a dict, refusing one that names a field twice.

    Either way one value would be dropped without a word: `{"petId": A, "petId": B}` (JSON
    keeps the last), or `{"petId": A, "pet_id": B}` (both become pet_id once renamed), and
    the command would act on a pet the client may not have meant.
    """
    named: dict[str, str] = {}
    for key, _ in pairs:
        field = camel_to_underscore(key)  # JSON object keys are always strings
        if field in named:
            raise DuplicateField(f'The fields "{named[field]}" and "{key}" name the same field "{field}".')
        named[field] = key
    return dict(pairs)
