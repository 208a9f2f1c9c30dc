"""The API's renderer renames keys exactly as djangorestframework-camel-case does and writes
JSON exactly as DRF's renderer does, faster."""

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

from django.utils.translation import gettext_lazy
from djangorestframework_camel_case.util import camelize as library_camelize
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from petstore.renderers import CamelCaseJSONRenderer, camelize


def test_keys_at_every_depth_are_renamed_as_the_library_renames_them():
    answer = ReturnDict(
        {
            "adoption_id": uuid.uuid4(),
            "steps": ReturnList(
                [{"name": "certificate", "last_error": "", "finished_at": None}], serializer=None
            ),
            "line_2": 2,
            "vet_appointment_date": datetime(2026, 11, 28, 10, tzinfo=UTC),
            "details": {"fields": {"max_age": ["Ensure this value is greater than or equal to 0."]}},
            "already": {"camelCase": True, "_leading": 1, "trailing_": 2, "double__under": 3},
            "codes": ("a_b", "c_d"),  # values are never renamed, only keys
            gettext_lazy("lazy_key"): gettext_lazy("lazy value"),
            7: "a number as key",
        },
        serializer=None,
    )

    assert camelize(answer) == library_camelize(answer)
    assert list(camelize(answer)) == list(library_camelize(answer))  # same order too


def test_the_renderer_answers_camel_case_json():
    body = CamelCaseJSONRenderer().render({"pet_id": uuid.UUID(int=1), "next_page": [{"days_available": 3}]})

    assert body == b'{"petId":"00000000-0000-0000-0000-000000000001","nextPage":[{"daysAvailable":3}]}'


def test_the_renderer_writes_every_value_as_drfs_own_json_renderer_does():
    """orjson writes the answers; DRF's renderer is what clients have always read."""
    answer = {
        "utc_moment": datetime(2026, 11, 28, 10, 5, 7, 123456, tzinfo=UTC),
        "whole_second": datetime(2026, 11, 28, 10, 5, 7, tzinfo=UTC),
        "offset_moment": datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        "old_zone": datetime(1800, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=53, seconds=28))),
        "naive_moment": datetime(2026, 3, 1, 9, 0),
        "day": date(2026, 2, 28),
        "clock": time(9, 30, 15),
        "pet_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "fee": Decimal("12.50"),
        "lazy": gettext_lazy("lazy value"),
        "text": 'Łukasz ✓ \u2028 line \u2029 paragraph "quoted" \\ back',
        "numbers": [0, -1, 2**63 - 1, 1.5, True, False, None],
        "nested": ({"inner_key": [1, {"deep_key": "x"}]},),
        7: "a number as key",
    }
    expected = JSONRenderer().render(camelize(answer))

    assert CamelCaseJSONRenderer().render(answer) == expected


def test_an_int_past_64_bits_and_indented_json_are_still_written():
    huge = {"position": 2**70}
    pretty = CamelCaseJSONRenderer().render({"pet_id": 1}, "application/json; indent=2")

    assert CamelCaseJSONRenderer().render(huge) == JSONRenderer().render(huge)
    assert pretty == b'{\n  "petId": 1\n}'
