"""Content-Security-Policy: one header, from settings.CONTENT_SECURITY_POLICY.

Django 5.2 has no CSP support of its own (6.0 adds SECURE_CSP). Our policy is one static
header with no nonces, so a few lines here beat a dependency (django-csp 4 changed its
settings format once already); moving to Django's own later means moving one dict.
"""

from __future__ import annotations

from django.conf import settings

HEADER = "Content-Security-Policy"


def policy(directives: dict[str, list[str]]) -> str:
    """Render {"script-src": ["'self'"], …} as "script-src 'self'; …"."""
    return "; ".join(" ".join([name, *sources]) for name, sources in directives.items())


class ContentSecurityPolicyMiddleware:
    """Add the policy to every response that has none (a view may set a stricter one)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        directives = settings.CONTENT_SECURITY_POLICY
        if directives and HEADER not in response:
            header = HEADER + "-Report-Only" if settings.CONTENT_SECURITY_POLICY_REPORT_ONLY else HEADER
            response.headers.setdefault(header, policy(directives))
        return response
