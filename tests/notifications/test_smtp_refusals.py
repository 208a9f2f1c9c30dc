"""Which SMTP refusals are worth retrying: 4xx and lost connections yes, 5xx no (RFC 5321)."""

import smtplib

import pytest

from notifications.email import _permanent


@pytest.mark.parametrize(
    "error, permanent",
    [
        (smtplib.SMTPDataError(550, b"5.7.1 Message refused"), True),
        (smtplib.SMTPDataError(421, b"4.3.2 Try again later"), False),
        (smtplib.SMTPSenderRefused(553, b"5.1.8 Sender rejected", "shop@example.org"), True),
        (smtplib.SMTPRecipientsRefused({"a@example.org": (550, b"no such user")}), True),
        (
            smtplib.SMTPRecipientsRefused({"a@example.org": (550, b"no"), "b@example.org": (451, b"later")}),
            False,
        ),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), False),
    ],
    ids=["550 on DATA", "421 on DATA", "553 sender", "550 every recipient", "one recipient 451", "cut off"],
)
def test_only_a_5xx_reply_is_a_permanent_refusal(error, permanent):
    assert _permanent(error) is permanent
