"""The JSON API of SPEC §5. Errors are JSON with an `error` message, never HTML: the
views answer their own, and leaderboard.middleware turns whatever else happens under
/api/ (an Http404 from a selector, an unknown URL, a wrong method, a 500) into JSON."""

from __future__ import annotations

import csv

from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from evaluator.services import lifecycle, storage
from leaderboard import analysis_selectors, filters, model_cards, progress_selectors, selectors, services
from leaderboard.auth import request_user, token_user
from leaderboard.models import Benchmark
from leaderboard.uploads import upload_problem


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _benchmark(request: HttpRequest) -> Benchmark:
    """The ?benchmark= (or form field) benchmark, the default one without it; Http404
    (a JSON 404 through the middleware) when there is no such benchmark."""
    return selectors.benchmark_get(request.GET.get("benchmark") or request.POST.get("benchmark"))


def api_get(view):
    """GET only. CSRF-exempt since it changes nothing and refuses every other method: a
    POST or DELETE gets the JSON 405 rather than the CSRF middleware's 403."""
    return csrf_exempt(require_GET(view))


@api_get
def leaderboard(request: HttpRequest) -> JsonResponse:
    """The board with the page's parameters (q, kind, level_min, level_max, flag, owner,
    sort, order: leaderboard.filters); a bad value is a 400 that names it."""
    bench = _benchmark(request)
    chosen, errors = filters.filters_parse(request.GET)
    if errors:
        return JsonResponse({"error": "; ".join(errors.values()), "parameters": errors}, status=400)
    return JsonResponse(filters.board_export(user=request_user(request), benchmark=bench, filters=chosen))


def _csrf_failure(request: HttpRequest) -> JsonResponse | None:
    """The CSRF check for a session-authenticated write to a csrf_exempt view.

    Token-authenticated calls need no CSRF token (a browser never adds the header on its
    own); a call that rides on the session cookie does.
    """
    if "Authorization" in request.headers:
        return None
    if CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {}) is not None:
        return _error("CSRF check failed: send the X-CSRFToken header, or use an API token", 403)
    return None


@csrf_exempt
@require_http_methods(["GET", "DELETE"])
def network_detail(request: HttpRequest, pk: int) -> JsonResponse:
    user = request_user(request)
    network = selectors.network_get_visible(user=user, pk=pk)
    if request.method == "DELETE":
        if not user.is_authenticated:
            return _error("send a valid API token: Authorization: Token <key>", 401)
        if (failure := _csrf_failure(request)) is not None:
            return failure
        if not selectors.can_manage(user=user, network=network):
            return _error("only the owner can delete this network", 403)
        lifecycle.network_delete(network=network)
        return JsonResponse({"id": pk, "deleted": True})
    # Other networks' attacks only where the *viewer* may see them (not the network
    # owner's view, which would show the owner's private networks).
    data = selectors.network_api_detail(network=network, user=user)
    data.update(analysis_selectors.network_api(network=network))  # issue 15: detection, vector space
    return JsonResponse(data)


@api_get
def benchmark_detail(request: HttpRequest, name: str) -> JsonResponse:
    """A benchmark's settings and its analysis (issue 15): detection of every public
    adversarial set by the GAN discriminator and the baseline, and the vector-space figures."""
    try:
        bench = selectors.benchmark_get(name)
    except Http404:
        return _error(f"no benchmark named {name!r}", 404)
    return JsonResponse({
        "benchmark": bench.name, "title": bench.title, "state": bench.state,
        "shape": [bench.height, bench.width, bench.channels], "classes": bench.num_classes,
        "train_size": bench.train_size, "eval_size": bench.eval_size,
        "attack": {**bench.attack_config(), "universal_count": bench.universal_count,
                   "universal_xi": bench.universal_xi},
        "ladder": bench.ladder,
        # Where its build stands (stage, reference, k of N, percent, time left); null once built.
        "build": None if bench.state == Benchmark.State.READY else progress_selectors.build_progress(bench),
        "analysis": analysis_selectors.benchmark_api(benchmark=bench),
    })


@api_get
def matrix(request: HttpRequest) -> JsonResponse:
    return JsonResponse(selectors.matrix_for(user=request_user(request), benchmark=_benchmark(request)))


@csrf_exempt
@require_http_methods(["POST"])
def network_create(request: HttpRequest) -> JsonResponse:
    user = token_user(request)
    if user is None:
        return _error("send a valid API token: Authorization: Token <key>", 401)
    problem = upload_problem(request)
    if problem:
        return _error(problem, 413 if "limit" in problem else 400)
    files = request.FILES.getlist("file")
    if len(files) != 1 or len(request.FILES) != 1:
        return _error("send exactly one file, in the multipart field 'file'", 400)
    try:
        bench = _benchmark(request)
    except Http404 as exc:  # a field of the upload, not the URL: bad input
        return _error(str(exc), 400)
    try:
        card, description = model_cards.card_from_data(request.POST)
    except model_cards.CardError as exc:
        return JsonResponse({"error": str(exc), "field": exc.field}, status=400)
    try:
        network = services.network_upload(
            benchmark=bench,
            owner=user,
            name=request.POST.get("name", ""),
            description=description,
            is_public=request.POST.get("public", "true").lower() not in ("0", "false", "no", "off"),
            archive=files[0],
            filename=files[0].name,
            card=card,
        )
    except services.DuplicateUpload as exc:
        # 409: the same archive is already a network; here is where to find it.
        existing = exc.existing
        return JsonResponse({
            "error": str(exc), "id": existing.pk, "status": existing.status,
            "url": request.build_absolute_uri(reverse("api-network", args=[existing.pk])),
            "page": request.build_absolute_uri(reverse("network", args=[existing.pk])),
        }, status=409)
    except services.UploadError as exc:
        status = 429 if "limit reached" in str(exc) else 413 if "MB limit" in str(exc) else 400
        return _error(str(exc), status)
    url = request.build_absolute_uri(reverse("api-network", args=[network.pk]))
    return JsonResponse({"id": network.pk, "status": network.status, "url": url}, status=202)


def _refused(user, message: str) -> JsonResponse:
    """401 to an anonymous caller (sign in or send a token), 403 to a signed-in one."""
    if not user.is_authenticated:
        response = _error(f"{message}; sign in or send a valid API token: Authorization: Token <key>", 401)
        response["WWW-Authenticate"] = "Token"
        return response
    return _error(message, 403)


@api_get
def adversarial_npz(request: HttpRequest, pk: int) -> FileResponse | JsonResponse:
    """SPEC §2 Secrecy: the owner and staff only (references: staff only). A network the
    caller may not see at all answers 404, as everywhere, so ids reveal nothing."""
    user = request_user(request)
    try:
        network = selectors.network_get_visible(user=user, pk=pk)
    except Http404:
        return _error("no such network", 404)
    if not selectors.can_download_adversarial(user=user, network=network):
        whose = "staff" if network.is_reference else "the network's owner and staff"
        return _refused(user, f"adversarial sets are secret: only {whose} may download this one")
    relative = selectors.adversarial_file(network=network)
    if relative is None:
        return _error("this network has no adversarial set yet", 404)
    return _npz(relative, f"adversarial-{network.pk}.npz", keep=("adversarial",))


@api_get
def universal_npz(request: HttpRequest, name: str) -> FileResponse | JsonResponse:
    """SPEC §2 Secrecy: universal perturbations are served to staff only."""
    user = request_user(request)
    try:
        bench = selectors.benchmark_get(name)
    except Http404:
        return _error(f"no benchmark named {name!r}", 404)
    if not selectors.can_download_universal(user=user):
        return _refused(user, "universal perturbations are secret: only staff may download them")
    relative = selectors.universal_file(benchmark=bench)
    if relative is None:
        return _error("this benchmark has no universal perturbations yet", 404)
    return _npz(relative, f"universal-{bench.name}.npz")


def _eval_split(name: str) -> dict | JsonResponse:
    try:
        return selectors.eval_split(benchmark=selectors.benchmark_get(name))
    except Http404 as exc:
        return _error(str(exc), 404)


@api_get
def eval_split_json(request: HttpRequest, name: str) -> JsonResponse:
    """The public clean eval split (indices, labels, pixel hashes): SPEC §2 Secrecy."""
    data = _eval_split(name)
    if isinstance(data, JsonResponse):
        return data
    response = JsonResponse(data)
    response["Cache-Control"] = "public, max-age=300"
    return response


@api_get
def eval_split_csv(request: HttpRequest, name: str) -> HttpResponse:
    """The same split as CSV: one row per eval image (source_index empty when unknown)."""
    data = _eval_split(name)
    if isinstance(data, JsonResponse):
        return data
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="eval-split-{data["benchmark"]}.csv"'
    response["Cache-Control"] = "public, max-age=300"
    writer = csv.writer(response)
    writer.writerow(selectors.EVAL_SPLIT_COLUMNS)
    for row in data["images"]:
        writer.writerow(["" if row[key] is None else row[key] for key in selectors.EVAL_SPLIT_COLUMNS])
    return response


def _npz(relative: str, filename: str, keep: tuple[str, ...] | None = None) -> FileResponse | JsonResponse:
    """The stored file, or with `keep` a copy holding only those arrays: an adversarial
    set is stored with the attack targets, which are secret even from the owner (the
    same targets serve every network, SPEC §2 Secrecy)."""
    path = storage.media_path(relative)
    if not path.is_file():
        return _error("the stored file is missing; an administrator can rerun the network", 404)
    if keep is None:
        handle = open(path, "rb")
    else:
        import io

        import numpy as np

        handle = io.BytesIO()
        with np.load(path) as data:
            np.savez_compressed(handle, **{k: data[k] for k in keep if k in data.files})
        handle.seek(0)
    return FileResponse(handle, as_attachment=True, filename=filename, content_type="application/octet-stream")
