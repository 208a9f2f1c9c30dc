"""Test settings: fast hashing, in-memory email; real services when the environment names them."""

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
RELAY_SWEEP_SECONDS = 0.2
