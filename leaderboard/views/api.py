"""The JSON API of SPEC §5. Errors are JSON with an `error` message, never HTML."""

from __future__ import annotations

from django.http import FileResponse, HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from evaluator.models import AdversarialDataset, UniversalSet
from evaluator.services import storage
from leaderboard import selectors, services
from leaderboard.auth import request_user, token_user
from leaderboard.models import Benchmark
from leaderboard.uploads import upload_problem


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _benchmark(request: HttpRequest) -> Benchmark:
    return selectors.benchmark_get(request.GET.get("benchmark") or request.POST.get("benchmark"))


@require_GET
def leaderboard(request: HttpRequest) -> JsonResponse:
    bench = _benchmark(request)
    user = request_user(request)
    rows = [selectors.network_row(n) for n in selectors.leaderboard_networks(user=user, benchmark=bench)]
    return JsonResponse({"benchmark": bench.name, "ladder": bench.ladder, "networks": rows})


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
        services.network_delete(network=network)
        return JsonResponse({"id": pk, "deleted": True})
    # Other networks' attacks only where the *viewer* may see them (not the network
    # owner's view, which would show the owner's private networks).
    data = selectors.network_api_detail(network=network, user=user)
    return JsonResponse(data)


@require_GET
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
        network = services.network_upload(
            benchmark=bench,
            owner=user,
            name=request.POST.get("name", ""),
            description=request.POST.get("description", ""),
            is_public=request.POST.get("public", "true").lower() not in ("0", "false", "no", "off"),
            archive=files[0],
            filename=files[0].name,
        )
    except services.UploadError as exc:
        status = 429 if "limit reached" in str(exc) else 413 if "MB limit" in str(exc) else 400
        return _error(str(exc), status)
    url = request.build_absolute_uri(reverse("api-network", args=[network.pk]))
    return JsonResponse({"id": network.pk, "status": network.status, "url": url}, status=202)


@require_GET
def adversarial_npz(request: HttpRequest, pk: int) -> FileResponse | JsonResponse:
    network = selectors.network_get_visible(user=request_user(request), pk=pk)
    adv = AdversarialDataset.objects.filter(network=network).first()
    if adv is None:
        return _error("this network has no adversarial set yet", 404)
    return _npz(adv.file, f"adversarial-{network.pk}.npz")


@require_GET
def universal_npz(request: HttpRequest, name: str) -> FileResponse | JsonResponse:
    bench = selectors.benchmark_get(name)
    universal = UniversalSet.objects.filter(benchmark=bench).first()
    if universal is None:
        return _error("this benchmark has no universal perturbations yet", 404)
    return _npz(universal.file, f"universal-{bench.name}.npz")


def _npz(relative: str, filename: str) -> FileResponse | JsonResponse:
    path = storage.media_path(relative)
    if not path.is_file():
        return _error("the stored file is missing; an administrator can rerun the network", 404)
    return FileResponse(open(path, "rb"), as_attachment=True, filename=filename,
                        content_type="application/octet-stream")
