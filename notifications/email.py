"""Emails: the customer's confirmation and the shelter's notice, text + HTML from templates/."""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from adoptions.models import Adoption
from events import sql
from events.handlers import PermanentFailure
from events.store import RecordedEvent

from .models import SentEmail


def send_templated_email(
    *, handler: str, event: RecordedEvent, to: str, template: str, context: dict
) -> None:
    """Render templates/notifications/<template>.{subject.txt,txt,html} and send once per event.

    The Message-ID is derived from (event, handler), so a receiving system can recognise a
    resend after a crash between sending and recording.
    """
    if sql.find(SentEmail, handler=handler, event_id=event.event_id):  # plain SQL: two emails an adoption
        return
    subject = render_to_string(f"notifications/{template}.subject.txt", context).strip()
    message_id = f"<{event.event_id}.{handler}@petstore-events>"
    email = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"notifications/{template}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={"Message-ID": message_id},
    )
    email.attach_alternative(render_to_string(f"notifications/{template}.html", context), "text/html")
    try:
        email.send()
    except smtplib.SMTPException as error:
        if _permanent(error):  # 5xx: the server will say the same next time
            raise PermanentFailure(f"the mail server refused it for good: {error}") from error
        raise
    sql.create(
        SentEmail(handler=handler, event_id=event.event_id, to=to, subject=subject, message_id=message_id)
    )


def _permanent(error: smtplib.SMTPException) -> bool:
    """A 5xx reply (RFC 5321: permanent negative completion); 4xx and lost connections are not."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
    else:
        codes = [getattr(error, "smtp_code", 0)]
    return bool(codes) and all(500 <= code < 600 for code in codes)


def adoption_context(adoption: Adoption) -> dict:
    return {
        "adoption": adoption,
        "pet": adoption.pet,
        "customer": adoption.customer,
        "shelter": adoption.shelter,
        "status_url": f"{settings.PUBLIC_BASE_URL}/api/adoptions/{adoption.id}",
    }


def adoption_confirmation_send(*, handler: str, event: RecordedEvent, adoption: Adoption) -> None:
    send_templated_email(
        handler=handler,
        event=event,
        to=adoption.customer.email,
        template="adoption_confirmation",
        context=adoption_context(adoption),
    )


def shelter_notice_send(*, handler: str, event: RecordedEvent, adoption: Adoption) -> None:
    send_templated_email(
        handler=handler,
        event=event,
        to=adoption.shelter.contact_email,
        template="shelter_notice",
        context=adoption_context(adoption),
    )
