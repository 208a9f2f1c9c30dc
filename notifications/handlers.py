"""The adoption steps that talk to people: two emails and the certificate."""

from __future__ import annotations

from adoptions.handlers import adoption_of, adoption_step
from events.store import RecordedEvent

from . import certificates, email

CONFIRMATION_EMAIL = "notifications.confirmation_email"
SHELTER_NOTICE = "notifications.shelter_notice"


@adoption_step(CONFIRMATION_EMAIL, queue="emails")
def send_confirmation_email(event: RecordedEvent) -> None:
    email.adoption_confirmation_send(handler=CONFIRMATION_EMAIL, event=event, adoption=adoption_of(event))


@adoption_step(SHELTER_NOTICE, queue="shelter-notices")
def notify_shelter(event: RecordedEvent) -> None:
    email.shelter_notice_send(handler=SHELTER_NOTICE, event=event, adoption=adoption_of(event))


@adoption_step("notifications.certificate", queue="certificates", time_limit=120)
def generate_certificate(event: RecordedEvent) -> None:
    certificates.certificate_generate(adoption=adoption_of(event))
