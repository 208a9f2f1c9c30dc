"""Failed staff-console logins, counted per username and client address in the shared cache.

After ADMIN_LOGIN_MAX_FAILURES failures the pair is locked out until the window that began
with its first failure (ADMIN_LOGIN_LOCKOUT_SECONDS) runs out; a successful login clears it.
The cache is Redis in every multi-process setup, so web workers share one count.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache

from .throttling import unless_cache_unavailable


def _key(username: str, address: str) -> str:
    # Hashed: a username may hold characters or a length the cache key rules refuse.
    digest = hashlib.sha256(f"{username.casefold()}\0{address}".encode()).hexdigest()
    return f"admin-login-failures:{digest[:40]}"


NOT_COUNTED = "failed staff logins are not counted"  # while Redis is down: staff can still log in


@unless_cache_unavailable(False, NOT_COUNTED)
def login_locked(*, username: str, address: str) -> bool:
    """Return whether this username may not try again from this address yet."""
    return cache.get(_key(username, address), 0) >= settings.ADMIN_LOGIN_MAX_FAILURES


@unless_cache_unavailable(0, NOT_COUNTED)
def login_failed(*, username: str, address: str) -> int:
    """Count one failed attempt; return the failures in the current window (0: not counted)."""
    key, window = _key(username, address), settings.ADMIN_LOGIN_LOCKOUT_SECONDS
    cache.add(key, 0, timeout=window)  # the window starts with the first failure
    try:
        return cache.incr(key)  # atomic in Redis; keeps the key's expiry
    except ValueError:  # the window ran out between add and incr
        cache.set(key, 1, timeout=window)
        return 1


@unless_cache_unavailable(None, NOT_COUNTED)
def login_succeeded(*, username: str, address: str) -> None:
    cache.delete(_key(username, address))
