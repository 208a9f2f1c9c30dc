"""API rate limits: one counter per client and time window, kept in Django's cache (Redis).

DRF's own rate throttles keep a list of every request's timestamp, read and rewritten whole
on each request: its size grows with the rate, and two concurrent requests can both read the
old list and undercount. Here a window is one cache key that is incremented atomically, so a
request costs the same at 10/minute as at 10,000/minute. A fixed window lets a client burst up
to twice the rate across a window boundary; that is the price of O(1).

Rates are read from settings on every request (DRF binds them at import), so tests and
operators can change them: THROTTLE_ANON_RATE and THROTTLE_USER_RATE, e.g. "120/minute";
"off" disables one.
"""

from __future__ import annotations

import functools
import logging
import time

from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import RedisError
from rest_framework import throttling
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)

OFF = ("", "off", "none")

#: What the cache raises when Redis cannot be reached (refused, timed out, restarting).
CACHE_UNAVAILABLE = (RedisError, OSError)
_last_warned = 0.0


def unless_cache_unavailable(fallback, consequence: str):
    """Decorate a function that counts in the cache: while Redis cannot be reached it returns
    `fallback` (the count pauses, the request goes on) and says so in the log, at most once
    a minute (an outage would flood it)."""

    def decorate(function):
        @functools.wraps(function)
        def counted(*args, **kwargs):
            global _last_warned
            try:
                return function(*args, **kwargs)
            except CACHE_UNAVAILABLE as error:
                if time.monotonic() - _last_warned >= 60:
                    _last_warned = time.monotonic()
                    logger.warning("cache unavailable (%r): %s until it is back", error, consequence)
                return fallback

        return counted

    return decorate


class WindowCounterMixin:
    """Count requests per (client, window) with an atomic cache increment."""

    def get_rate(self) -> str | None:
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:  # a misspelt scope must not switch throttling off silently
            raise ImproperlyConfigured(f"No DEFAULT_THROTTLE_RATES entry for scope {self.scope!r}.")
        rate = rates[self.scope]
        return None if rate is None or rate.strip().lower() in OFF else rate

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        window = int(self.timer() // self.duration)
        self.window_ends_at = (window + 1) * self.duration
        return self._count(f"{self.key}:{window}") <= self.num_requests

    # Limits pause while Redis is down: the API must not go down with it.
    @unless_cache_unavailable(0, "API rate limits are not counted")
    def _count(self, key: str) -> int:
        try:
            return self.cache.incr(key)
        except ValueError:  # the window's first request (or its key just expired)
            if self.cache.add(key, 1, timeout=self.duration):
                return 1
            return self.cache.incr(key)  # another request created it meanwhile

    def wait(self) -> float:
        return max(0.0, self.window_ends_at - self.timer())


class AnonRateThrottle(WindowCounterMixin, throttling.AnonRateThrottle):
    """Anonymous clients, by address (THROTTLE_ANON_RATE)."""


class UserRateThrottle(WindowCounterMixin, throttling.UserRateThrottle):
    """Signed-in users, by user id (THROTTLE_USER_RATE); anonymous ones are the anon scope's."""

    def get_cache_key(self, request, view) -> str | None:
        if not (request.user and request.user.is_authenticated):
            return None
        return super().get_cache_key(request, view)
