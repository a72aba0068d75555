"""HTML pages of one network (page, gallery images, badge, the picker's matrices) and
the owner's actions on it (visibility, delete), and the upload form.

Reads go through leaderboard.selectors, writes through leaderboard.services.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evaluator.models import AdversarialDataset
from evaluator.services import lifecycle
from leaderboard import badge as badges
from leaderboard import gallery, plots, progress_selectors, selectors, services
from leaderboard.forms import UploadForm, size_limit_text
from leaderboard.models import Benchmark, Network
from leaderboard.uploads import upload_problem
from leaderboard.views import analysis as analysis_context
from leaderboard.views.cards import duplicate_html
from leaderboard.views.context import (
    benchmark_names,
    ladder_size,
    query_suffix,
)

S = Network.Status


# --------------------------------------------------------------------------- network page


def _deciding_sentence(network: Network, comparisons: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The comparison that fixes the level, for the level card. A reference whose climb
    reaches its own rung is stopped by it (no network is more robust than itself, so R_k
    reaches at most level k - 1): that row has no numbers, and the card says so."""
    decisive = next((c for c in comparisons if c.get("deciding") and ("ours" in c or c.get("self"))), None)
    if decisive is None:
        return None
    if decisive.get("self"):
        return {"self": True, "wins": False, "reference": decisive["reference"], "position": decisive["position"]}
    return {
        "wins": decisive["wins"],
        "reference": decisive["reference"],
        "position": decisive["position"],
        "ours": decisive["ours"],
        "theirs": decisive["theirs"],
        "p_value": decisive["p_value"],
        "significant": decisive["significant"],
    }


def _gallery_items(network: Network, adv: AdversarialDataset | None) -> list[dict[str, Any]]:
    sample = gallery.gallery_sample(benchmark=network.benchmark, adversarial=adv)
    if sample is None:
        return []
    names = list(network.benchmark.class_names or [])

    def cls(k: int | None) -> str:
        if k is None:
            return "—"
        return names[k] if 0 <= k < len(names) else str(k)

    items = []
    for i in sample.indices:
        y, p = int(sample.labels[i]), int(sample.predictions[i])
        t = int(sample.targets[i]) if sample.targets is not None else None
        items.append({
            "index": i, "label": cls(y), "target": cls(t), "predicted": cls(p),
            "hit": t is not None and p == t, "correct": p == y,
        })
    return items


def _gallery_summary(items: list[dict[str, Any]], adv: AdversarialDataset | None) -> dict[str, Any]:
    """What the gallery's label says: a random sample, and how its hits compare with the
    attack success over every eval image."""
    hits = sum(1 for item in items if item["hit"])
    return {"size": len(items), "hits": hits, "missed": len(items) - hits, "seed": gallery.GALLERY_SEED,
            "total": adv.total if adv is not None else 0,
            "success": adv.success_rate if adv is not None else None}


def _gallery_image_allowed(request: HttpRequest, network: Network, adv: AdversarialDataset, index: int) -> bool:
    """SPEC §2 Secrecy: every image of the set to those who may download it (owner, staff);
    to everyone else only the sample the network page shows, so the route cannot be
    walked index by index into the whole set (a lookup table of adversarial images)."""
    if selectors.can_download_adversarial(user=request.user, network=network):
        return True
    sample = gallery.gallery_sample(benchmark=network.benchmark, adversarial=adv)
    return sample is not None and index in sample.indices


@functools.lru_cache(maxsize=512)
def _confusion_json_cached(confusion: str, class_names: tuple[str, ...], title: str) -> str:
    return plots.script_json(plots.confusion_figure(json.loads(confusion), list(class_names), title=title))


def _confusion_json(confusion: Any, class_names: list[str], title: str) -> str:
    """A confusion heatmap's figure JSON, memoised on its inputs: building it through
    plotly.graph_objects costs tens of ms, and a page shows up to four."""
    return _confusion_json_cached(json.dumps(confusion), tuple(class_names), title)


@require_GET
def network_confusion(request: HttpRequest, pk: int, source_pk: int) -> JsonResponse:
    """One matrix for the network page's "another network's attack" picker."""
    network = selectors.network_get_visible(user=request.user, pk=pk)
    return JsonResponse(selectors.network_confusion_against(network=network, source_pk=source_pk,
                                                            user=request.user))


@require_GET
def network_detail(request: HttpRequest, pk: int) -> HttpResponse:
    network = selectors.network_get_visible(user=request.user, pk=pk)
    bench = network.benchmark
    adv = AdversarialDataset.objects.filter(network=network).first()
    comparisons = selectors.reference_comparisons(network=network) if adv is not None else []
    confusions = selectors.network_page_confusions(network=network, user=request.user, others=False)
    others = list(confusions["others"])
    others.sort(key=lambda o: o["name"].lower())
    if others:  # the first is drawn; the others are fetched when picked
        others[0] = selectors.network_confusion_against(network=network, source_pk=others[0]["id"],
                                                        user=request.user)
    class_names = list(bench.class_names or []) or [str(i) for i in range(bench.num_classes)]
    figures = {}
    for key, title in (("clean", "on clean images"), ("universal", "on the universal adversarial images"),
                       ("own", "on its own adversarial images (white-box)")):
        if confusions.get(key) is not None:
            figures[key] = _confusion_json(confusions[key], class_names, title)
    if others:
        figures["other"] = _confusion_json(others[0]["confusion"], class_names, f"on {others[0]['name']}'s adversarial images")
    wins = sum(1 for c in comparisons if c.get("wins") is True)
    losses = sum(1 for c in comparisons if c.get("wins") is False)
    badge_url = request.build_absolute_uri(reverse("network-badge", args=[network.pk]))
    page_url = request.build_absolute_uri(reverse("network", args=[network.pk]))
    context = {
        "network": network,
        "benchmark": bench,
        "nav": "leaderboard",
        "adv": adv,
        "can_manage": selectors.can_manage(user=request.user, network=network),
        "can_download": selectors.can_download_adversarial(user=request.user, network=network),
        "comparisons": comparisons,
        "wins": wins,
        "losses": losses,
        "deciding": _deciding_sentence(network, comparisons),
        "rungs": ladder_size(bench),
        "figures": figures,
        "others": [{"id": o["id"], "name": o["name"]} for o in others],
        "class_names": class_names,
        "gallery": (items := _gallery_items(network, adv)),
        "gallery_summary": _gallery_summary(items, adv),
        "badge_markdown": f"[![robustness]({badge_url})]({page_url})",
        "info": {k: v for k, v in (network.info or {}).items() if k != "model_dir"},
        "running": network.is_running,
        "estimate": progress_selectors.network_estimate(network),  # None unless running (no query then)
        "stages": [*Network.RUNNING, S.RANKED],
        "query": query_suffix(bench),
        "image_w": bench.width * gallery.scale_for(bench.height, bench.width),
        "image_h": bench.height * gallery.scale_for(bench.height, bench.width),
    }
    context.update(analysis_context.network_page(network))  # issue 15: detection, vector space
    return render(request, "leaderboard/network.html", context)


@require_GET
@cache_control(private=True, max_age=3600)  # who may see an image depends on the viewer
def gallery_image(request: HttpRequest, pk: int, index: int) -> HttpResponse:
    network = selectors.network_get_visible(user=request.user, pk=pk)
    part = request.GET.get("part", "adversarial")
    if part not in gallery.PARTS:
        raise Http404("part must be original, perturbation or adversarial")
    adv = AdversarialDataset.objects.filter(network=network).first()
    if adv is None or not 0 <= index < adv.total:
        raise Http404("no such adversarial image")
    if not _gallery_image_allowed(request, network, adv, index):
        raise Http404("no such image in this network's gallery")
    try:
        data = gallery.gallery_png(network=network, adversarial=adv, index=index, part=part)
    except (FileNotFoundError, KeyError, IndexError) as exc:
        raise Http404("the image files are missing") from exc
    return HttpResponse(data, content_type="image/png")


@require_GET
def network_badge(request: HttpRequest, pk: int) -> HttpResponse:
    network = selectors.network_get_visible(user=request.user, pk=pk)
    svg = badges.badge_svg(network, ladder_size=ladder_size(network.benchmark))
    response = HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")
    response["Cache-Control"] = "max-age=300"
    # Opened on its own, the SVG must not run anything (it never contains script).
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response


def _managed(request: HttpRequest, pk: int) -> Network:
    network = selectors.network_get_visible(user=request.user, pk=pk)
    if not selectors.can_manage(user=request.user, network=network):
        raise PermissionDenied("only the owner can change this network")
    return network


@login_required
@require_POST
def network_visibility(request: HttpRequest, pk: int) -> HttpResponse:
    network = _managed(request, pk)
    public = request.POST.get("public", "") in ("1", "true", "on", "yes")
    services.network_set_public(network=network, is_public=public)
    messages.success(request, f"“{network.name}” is now {'public' if public else 'private'}.")
    return redirect("network", pk=network.pk)


@login_required
@require_http_methods(["GET", "POST"])
def network_delete(request: HttpRequest, pk: int) -> HttpResponse:
    network = _managed(request, pk)
    if request.method == "POST":
        name = network.name
        lifecycle.network_delete(network=network)
        messages.success(request, f"“{name}” was deleted.")
        return redirect("profile")
    return render(request, "leaderboard/network_delete.html", {"network": network, "nav": ""})


# --------------------------------------------------------------------------- upload


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    names = benchmark_names()
    if request.method == "POST":
        problem = upload_problem(request)
        form = UploadForm(request.POST, request.FILES, benchmarks=names)
        if problem:
            form.is_valid()
            form.errors.clear()
            form.add_error(None, problem)
        elif form.is_valid():
            try:
                bench = selectors.benchmark_get(form.cleaned_data.get("benchmark") or None)
                network = services.network_upload(
                    benchmark=bench,
                    owner=request.user,
                    name=form.cleaned_data["name"],
                    description=form.cleaned_data.get("description", ""),
                    archive=form.cleaned_data["archive"],
                    filename=form.cleaned_data["archive"].name,
                    is_public=bool(form.cleaned_data.get("public")),
                    card=form.card,
                )
            except Http404:
                form.add_error("benchmark", "no such benchmark")
            except services.DuplicateUpload as exc:
                form.add_error("archive", duplicate_html(exc.existing))
            except services.UploadError as exc:
                form.add_error("archive", str(exc))
            else:
                messages.success(request, f"“{network.name}” was uploaded and queued for evaluation.")
                return redirect("network", pk=network.pk)
    else:
        form = UploadForm(benchmarks=names)
    bench = Benchmark.objects.filter(name=settings.DEFAULT_BENCHMARK).first()
    return render(request, "leaderboard/upload.html", {
        "form": form, "nav": "upload", "size_limit": size_limit_text(), "benchmark": bench,
        "benchmark_ready": bench is not None and bench.state == Benchmark.State.READY,
        "uploads_per_hour": settings.UPLOADS_PER_HOUR,
    })
