"""Upload handling that enforces the size cap while the request streams in.

Django's DATA_UPLOAD_MAX_MEMORY_SIZE does not count files, so without this a client
could fill the disk before any view code runs.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict


class SizeCappedUploadHandler(FileUploadHandler):
    """Stops the upload as soon as the bytes received pass MAX_UPLOAD_BYTES.

    Placed first in the handler chain: it only counts, then passes the chunk on to
    Django's own memory/temporary-file handlers.
    """

    def __init__(self, request=None) -> None:
        super().__init__(request)
        self.received = 0
        self.files = 0
        self.exceeded = False

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > settings.MAX_UPLOAD_BYTES + 64 * 1024:
            # Declared too large: refuse without reading a byte of the body. Returning
            # empty POST/FILES marks the parse as handled.
            self.exceeded = True
            if self.request is not None:
                self.request.upload_too_large = True
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.files += 1
        if self.files > 1 and self.request is not None:
            self.request.upload_too_many_files = True

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > settings.MAX_UPLOAD_BYTES:
            self.exceeded = True
            if self.request is not None:
                self.request.upload_too_large = True
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def upload_problem(request) -> str | None:
    """A user-readable reason the upload was cut off, if it was.

    Reads request.FILES first: the handlers only run when the body is parsed.
    """
    request.FILES  # noqa: B018 - forces the multipart parse
    if getattr(request, "upload_too_large", False):
        return f"the archive is larger than the {settings.MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit"
    if getattr(request, "upload_too_many_files", False):
        return "send exactly one file per upload"
    return None
