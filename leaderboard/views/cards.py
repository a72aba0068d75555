"""The owner's model card editor, and the duplicate-upload answer of the upload form."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_http_methods

from leaderboard import model_cards, selectors
from leaderboard.forms import ModelCardForm
from leaderboard.models import Network


def duplicate_html(existing: Network) -> SafeString:
    """The form's error for a duplicate upload: a link to the network already ranked (or
    on its way). The name is the uploader's text: format_html escapes it."""
    return format_html(
        'The same archive is already on the leaderboard as <a href="{}" id="duplicate-link">{}</a> '
        "(network {}, {}). Open it for its results instead of ranking the same model twice.",
        reverse("network", args=[existing.pk]), existing.name, existing.pk, existing.status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def network_card_edit(request: HttpRequest, pk: int) -> HttpResponse:
    network = selectors.network_get_visible(user=request.user, pk=pk)
    if not selectors.can_manage(user=request.user, network=network):
        raise PermissionDenied("only the owner can edit this network's model card")
    form = ModelCardForm.from_network(network, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        model_cards.network_card_update(network=network, card=form.card,
                                        description=form.cleaned_data["description"])
        messages.success(request, f"The model card of “{network.name}” was saved.")
        return redirect(reverse("network", args=[network.pk]) + "#model-card")
    return render(request, "leaderboard/network_card.html", {"network": network, "form": form, "nav": ""})
