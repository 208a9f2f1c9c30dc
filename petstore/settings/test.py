"""Test settings: fast hashing, in-memory email; real services when the environment names them."""

from .base import *  # noqa: F403
from .base import DATABASES, POSTGRESQL_ENGINE, REST_FRAMEWORK, env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if not env.str("EMAIL_URL", default=""):  # a fault drill may point a worker at a real SMTP server
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
RELAY_SWEEP_SECONDS = env.float("RELAY_SWEEP_SECONDS", default=0.2)  # a drill may want it long
# No test is throttled by accident; tests/test_throttling.py lowers the rates to see a 429.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"anon": "100000/minute", "user": "100000/minute"},
}

# The event log refuses TRUNCATE (events/migrations/0006) and, on SQLite, DELETE (0008);
# emptying the test database between tests is where a session may, and says so.
EVENT_LOG_ERASABLE = True
if DATABASES["default"]["ENGINE"] == POSTGRESQL_ENGINE:
    DATABASES["default"]["OPTIONS"]["options"] = "-c petstore.erase_event_log=on"
