"""What the notification handlers produced: sent emails and adoption certificates."""

from django.db import models

from adoptions.models import Adoption


class SentEmail(models.Model):
    """An email a handler sent for an event; at most one per (handler, event)."""

    handler = models.CharField(max_length=100)
    event_id = models.UUIDField()
    to = models.CharField(max_length=300)
    subject = models.CharField(max_length=300)
    message_id = models.CharField(max_length=300)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sent_at"]
        constraints = [
            models.UniqueConstraint(fields=["handler", "event_id"], name="one_email_per_handler_event")
        ]

    def __str__(self) -> str:
        return f"{self.subject} → {self.to}"


class Certificate(models.Model):
    """The adoption certificate PDF; one per adoption, stored under a name derived from it."""

    adoption = models.OneToOneField(Adoption, on_delete=models.PROTECT, related_name="certificate")
    file = models.FileField(upload_to="certificates/")
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"certificate of {self.adoption_id}"
