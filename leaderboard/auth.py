"""API token authentication (header `Authorization: Token <key>`)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest

from leaderboard.models import ApiToken


def token_user(request: HttpRequest) -> AbstractBaseUser | None:
    """The user of a valid, unrevoked token in the request, else None."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "token" or not key.strip():
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key=key.strip(), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    return token.user if token else None


def request_user(request: HttpRequest) -> AbstractBaseUser | AnonymousUser:
    """Token user if a token was sent, else the session user (browser calls)."""
    if "Authorization" in request.headers:
        return token_user(request) or AnonymousUser()
    return request.user
