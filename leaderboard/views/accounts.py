"""Sign up and the profile page (own networks, API tokens). Log in/out are Django's views."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from leaderboard import progress_selectors, services
from leaderboard.forms import SignupForm, TokenForm
from leaderboard.models import ApiToken, Network


def _next_url(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return default


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("profile")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}! You can upload a network now.")
        return redirect(_next_url(request, "/accounts/profile/"))
    return render(request, "registration/signup.html",
                  {"form": form, "nav": "signup", "next": _next_url(request, "")})


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    networks = list(Network.objects.filter(owner=request.user).select_related("benchmark").order_by("-created_at"))
    # Time left of the running ones, as on the board: one query, none when nothing runs.
    estimates = progress_selectors.network_estimates(networks)
    for network in networks:
        network.estimate = estimates.get(network.pk)
    tokens = ApiToken.objects.filter(user=request.user).order_by("revoked_at", "-created_at")
    return render(request, "registration/profile.html", {
        "networks": networks, "tokens": tokens, "token_form": TokenForm(), "nav": "profile",
        "new_token": request.session.pop("new_token", None),
    })


@login_required
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    label = form.cleaned_data.get("label", "") if form.is_valid() else ""
    token = services.token_create(user=request.user, label=label)
    # The full key is shown once, right after creation.
    request.session["new_token"] = token.key
    messages.success(request, "New API token created. Copy it now: it is shown only once.")
    return redirect("profile")


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if token.revoked_at is None:
        services.token_revoke(token=token)
        messages.success(request, "The token was revoked.")
    return redirect("profile")
