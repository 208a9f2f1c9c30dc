"""The API's renderer renames keys exactly as djangorestframework-camel-case does, faster."""

import uuid
from datetime import UTC, datetime

from django.utils.translation import gettext_lazy
from djangorestframework_camel_case.util import camelize as library_camelize
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
