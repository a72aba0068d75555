"""Accounts: sign-up, log-in, profile and API tokens."""

from __future__ import annotations


import pytest
from django.contrib.auth.models import User

from leaderboard.models import ApiToken
from leaderboard.services import token_create
from tests.fakes import fake_suite

pytestmark = pytest.mark.django_db


def _text(response) -> str:
    return response.content.decode()


# --------------------------------------------------------------------------- accounts


def test_signup_login_logout_and_profile(client) -> None:
    fake_suite(references=1)
    assert client.get("/accounts/signup/").status_code == 200
    response = client.post("/accounts/signup/", {"username": "carol", "password1": "a-Long-pass-42",
                                                 "password2": "a-Long-pass-42"})
    assert response.status_code == 302
    html = _text(client.get("/accounts/profile/"))
    assert "carol" in html and "not uploaded a network yet" in html
    client.post("/accounts/logout/")
    assert client.get("/accounts/profile/").status_code == 302
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "carol", "password": "a-Long-pass-42"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert "Log out" in _text(client.get("/"))


def test_signup_errors_inline(client) -> None:
    response = client.post("/accounts/signup/", {"username": "dave", "password1": "x", "password2": "y"})
    assert response.status_code == 200 and 'class="error"' in _text(response)
    assert not User.objects.filter(username="dave").exists()


def test_profile_tokens_create_and_revoke(client, alice, bob) -> None:
    suite = fake_suite(references=1, uploads=2, owner=alice)
    client.force_login(alice)
    html = _text(client.get("/accounts/profile/"))
    for net in suite.uploads:
        assert f'/networks/{net.pk}/"' in html
    response = client.post("/accounts/tokens/", {"label": "laptop"})
    assert response.status_code == 302
    token = ApiToken.objects.get(user=alice)
    html = _text(client.get("/accounts/profile/"))
    assert token.key in html and "laptop" in html
    assert token.key not in _text(client.get("/accounts/profile/"))  # shown once
    other = token_create(user=bob)
    assert client.post(f"/accounts/tokens/{other.pk}/revoke/").status_code == 404
    assert client.post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    other.refresh_from_db()
    assert token.revoked_at is not None and other.revoked_at is None
