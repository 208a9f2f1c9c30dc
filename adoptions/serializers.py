"""Input validation and output shapes of the JSON API (snake_case here, camelCase on the wire)."""

from __future__ import annotations

from rest_framework import serializers

from events.catalogue import EVENT_TYPES, Species, upcast
from events.models import Delivery
from petstore.shared_serializers import UUIDText

from .domain import PetStatus
from .models import Adoption

PET_STATUSES = [s.value for s in PetStatus]


class StrictSerializer(serializers.Serializer):
    """Reject fields we do not know, so a typo never passes silently."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
        return super().to_internal_value(data)


def expected_version_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=0,
        required=False,
        allow_null=True,
        help_text="The pet's version you decided on: 409 `version_conflict` if it has moved on since.",
    )


class RegisterPetInput(StrictSerializer):
    name = serializers.CharField(max_length=100, min_length=1)
    species = serializers.ChoiceField(choices=[s.value for s in Species])
    age = serializers.IntegerField(min_value=0, max_value=100)
    shelter_id = UUIDText()
    photo_url = serializers.URLField(max_length=500, required=False, allow_null=True)


class AdoptPetInput(StrictSerializer):
    pet_id = UUIDText()
    customer_id = UUIDText(required=False, allow_null=True)
    shelter_id = UUIDText(required=False, allow_null=True)
    expected_version = expected_version_field()


class ReturnPetInput(StrictSerializer):
    pet_id = UUIDText()
    reason = serializers.CharField(max_length=1000, min_length=1)
    expected_version = expected_version_field()


class RenamePetInput(StrictSerializer):
    pet_id = UUIDText()
    new_name = serializers.CharField(max_length=100, min_length=1)
    expected_version = expected_version_field()


class PetChangeOutput(serializers.Serializer):
    pet_id = serializers.UUIDField()
    version = serializers.IntegerField()
    position = serializers.IntegerField()


class AdoptionStartedOutput(serializers.Serializer):
    adoption_id = serializers.UUIDField(source="adoption.id")
    pet_id = serializers.UUIDField(source="adoption.pet_id")
    status = serializers.ChoiceField(choices=Adoption.Status.choices, source="adoption.status")
    position = serializers.IntegerField()


class AdoptionStepOutput(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=Delivery.Status.choices, help_text="Its handler's delivery.")
    attempts = serializers.IntegerField()
    last_error = serializers.CharField(allow_blank=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class AdoptionOutput(serializers.Serializer):
    """An adoption with its steps; built from selectors.adoption_view."""

    adoption_id = serializers.UUIDField(source="adoption.id")
    pet_id = serializers.UUIDField(source="adoption.pet_id")
    customer_id = serializers.UUIDField(source="adoption.customer_id")
    shelter_id = serializers.UUIDField(source="adoption.shelter_id")
    status = serializers.ChoiceField(choices=Adoption.Status.choices, source="adoption.status")
    created_at = serializers.DateTimeField(source="adoption.created_at")
    completed_at = serializers.DateTimeField(source="adoption.completed_at", allow_null=True)
    returned_at = serializers.DateTimeField(source="adoption.returned_at", allow_null=True)
    steps = AdoptionStepOutput(many=True)
    certificate_url = serializers.CharField(source="details.certificate_url", allow_null=True)
    vet_appointment_date = serializers.DateTimeField(source="details.vet_appointment_date", allow_null=True)


class PetOutput(serializers.Serializer):
    pet_id = serializers.UUIDField(source="id")
    name = serializers.CharField()
    species = serializers.ChoiceField(choices=[s.value for s in Species])
    age = serializers.IntegerField()
    shelter_id = serializers.UUIDField()
    photo_url = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=PET_STATUSES)
    adopted_by = serializers.UUIDField(allow_null=True)
    adoption_id = serializers.UUIDField(allow_null=True)
    version = serializers.IntegerField()
    last_changed_at = serializers.DateTimeField(source="last_recorded_at")
    as_of = serializers.DateTimeField(required=False, help_text="The `asOf` asked for, in UTC.")


class PetEventOutput(serializers.Serializer):
    event_id = serializers.UUIDField()
    position = serializers.IntegerField()
    version = serializers.IntegerField(source="stream_version")
    type = serializers.CharField(source="event_type")
    schema_version = serializers.SerializerMethodField(help_text="The version `data` is in: the current one.")
    stored_schema_version = serializers.IntegerField(
        source="schema_version", help_text="The version the event was recorded in (older ones are upcast)."
    )
    data = serializers.SerializerMethodField()
    metadata = serializers.JSONField()
    recorded_at = serializers.DateTimeField()

    def get_schema_version(self, event) -> int:
        return EVENT_TYPES[event.event_type].version

    def get_data(self, event) -> dict:
        """The payload at its current schema version (old versions are upcast on read)."""
        return upcast(event.event_type, event.schema_version, event.payload)
