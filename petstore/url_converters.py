"""Path converters for the API's addresses."""

import uuid

from django.urls import register_converter


class AnyCaseUUIDConverter:
    """A UUID in either case: RFC 9562 reads `A1B2…` and `a1b2…` alike, and so do the JSON
    bodies (UUIDText), so an id copied in upper case finds its resource instead of a 404.
    Links we give out stay lower case."""

    regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value: uuid.UUID | str) -> str:
        return str(value).lower()


register_converter(AnyCaseUUIDConverter, "any_case_uuid")
