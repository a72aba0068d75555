"""The JSON API never answers with an HTML page (SPEC §5; issue 14).

Views under /api/ answer their own errors as JSON (views/api.py `_error`). Everything
else that can still produce an error there becomes JSON here, with an `error` message
and the same status and headers (Allow, WWW-Authenticate, cookies): an Http404 or
PermissionDenied raised by a view or a selector, an unknown /api/ URL, a wrong method
(require_GET's empty 405), a CSRF refusal, a malformed request (400) and an uncaught
exception (500, still logged by Django as usual, its details never sent).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Callable

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404

API_PREFIX = "/api/"
JSON = "application/json"
_SKIPPED_HEADERS = {"content-type", "content-length", "content-disposition"}


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def _message(request: HttpRequest, response: HttpResponse) -> str:
    status = response.status_code
    told = getattr(request, "_api_error", None)
    if told:
        return told
    if status == 404:
        if getattr(request, "resolver_match", None) is None:
            return f"no such API endpoint: {request.path}"
        return "not found"
    if status == 405:
        allowed = response.get("Allow", "")
        return f"method {request.method} is not allowed here" + (f"; use {allowed}" if allowed else "")
    if status == 403:
        return ("forbidden: a write that rides on the session cookie needs the X-CSRFToken header; "
                "or send an API token: Authorization: Token <key>")
    if status >= 500:
        return "internal server error (it was logged; details are not sent)"
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return f"error {status}"


def _as_json(request: HttpRequest, response: HttpResponse) -> JsonResponse:
    out = JsonResponse({"error": _message(request, response)}, status=response.status_code)
    for key, value in response.headers.items():
        if key.lower() not in _SKIPPED_HEADERS:
            out[key] = value
    out.cookies = response.cookies
    return out


class JsonApiErrorsMiddleware:
    """Outermost middleware: rewrites any non-JSON error response of an /api/ URL."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not is_api(request) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").split(";")[0].strip() == JSON and not response.streaming:
            return response
        return _as_json(request, response)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Keep the message of a 404 or 403 raised by a view (Django still renders and
        logs the response; __call__ rewrites it). Other exceptions' text stays private."""
        if not is_api(request) or isinstance(exception, Resolver404):
            return None
        if isinstance(exception, (Http404, PermissionDenied)) and exception.args:
            message = exception.args[0]
            if isinstance(message, str) and message:
                request._api_error = message
        return None
