"""Idempotency-Key for command endpoints: a retried request gets the first answer again.

The answer is stored in the same transaction as the command's events, so either both exist
or neither does. A concurrent twin waits on a lock on (user, key), then replays the answer.
The lock is an advisory one, not the key's row claimed first: a command must write its event
before anything else (events/store.py), or readers could see a stream's events out of order.
"""

from __future__ import annotations

import functools
import hashlib
import json

from django.db import IntegrityError, transaction
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from events import sql
from petstore.api_errors import error_response

from .models import IdempotentRequest

HEADER = "Idempotency-Key"
REPLAYED_HEADERS = ("Location", "X-Event-Position")


def _fingerprint(request) -> str:
    body = json.dumps(request.data, sort_keys=True, cls=JSONEncoder)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _replay(record: IdempotentRequest, fingerprint: str) -> Response:
    if record.request_hash != fingerprint:
        return error_response(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request.",
        )
    headers = {**record.response_headers, "Idempotent-Replayed": "true"}
    return Response(record.response_body, status=record.response_status, headers=headers)


def idempotent(handler):
    """Wrap a view's post() so that a repeated Idempotency-Key replays the stored answer."""

    @functools.wraps(handler)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not 1 <= len(key) <= 200:
            return error_response(400, "invalid_idempotency_key", "Use 1 to 200 characters.")
        fingerprint = _fingerprint(request)
        try:
            with transaction.atomic():
                # A concurrent twin waits here until we commit, then finds our answer.
                sql.lock_until_transaction_ends(f"idempotency:{request.user.pk}:{key}")
                record = IdempotentRequest.objects.filter(user=request.user, key=key).first()
                if record is not None:
                    return _replay(record, fingerprint)
                response = handler(view, request, *args, **kwargs)
                if 200 <= response.status_code < 300:
                    IdempotentRequest.objects.create(
                        user=request.user,
                        key=key,
                        endpoint=request.path,
                        request_hash=fingerprint,
                        response_status=response.status_code,
                        response_body=json.loads(json.dumps(response.data, cls=JSONEncoder)),
                        response_headers={h: response[h] for h in REPLAYED_HEADERS if h in response},
                    )
                else:  # failures are not remembered: the client may fix and retry
                    transaction.set_rollback(True)
        except IntegrityError:  # without the lock (SQLite), a twin with the same key committed first
            record = IdempotentRequest.objects.filter(user=request.user, key=key).first()
            if record is None:  # the command's own error, not a twin's answer
                raise
            return _replay(record, fingerprint)
        return response

    return wrapper
