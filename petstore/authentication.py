"""API authentication."""

from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from events import sql


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, fetching the user's customer profile in the same query.

    Nearly every command asks "is this a customer?"; one join saves a round trip per request.
    The query is plain SQL (events/sql.py): every API request runs it, and compiling the
    ORM's select_related version cost twice as much as running it.
    """

    def authenticate_credentials(self, key):
        model = self.get_model()
        try:
            token = sql.get_with_related(model, key, ["user", "user__customer"])
        except model.DoesNotExist:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from None
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (token.user, token)
