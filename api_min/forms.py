"""A strict multipart/form-data reader for the voice upload. Starlette's form parser decodes a
text field that is not UTF-8 as Latin-1 without saying so, spools the whole file before the route
sees it, and caps nothing per file; this one streams the body once, keeps the raw bytes of every
field so the route can insist on UTF-8, and stops reading as soon as a part passes its limit."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from jobs.submission import RequestRejected

MAX_FIELDS = 16


@dataclass
class UploadForm:
    """Text fields as raw bytes; the one file part (``file_field``) with its raw file name."""

    fields: dict[str, bytes] = field(default_factory=dict)
    file: bytes | None = None
    filename: bytes | None = None


@dataclass
class _Part:
    name: str | None = None
    filename: bytes | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


async def read_upload_form(request: Request, file_field: str, max_file_bytes: int, max_field_bytes: int) -> UploadForm:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        # As FastAPI answers a body that does not match the schema: the form lacks its file.
        raise RequestRejected(422, "invalid_request", f"send multipart/form-data with an {file_field!r} file part")
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestRejected(400, "invalid_multipart", "the multipart body has no boundary")

    form = UploadForm()
    part = _Part()
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        part.headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        raw_name = options.get(b"name")
        if raw_name is None:
            raise _Stop(RequestRejected(400, "invalid_multipart", "a form part has no name"))
        part.name = raw_name.decode("utf-8", "replace")
        part.filename = options.get(b"filename")
        if part.name in form.fields or (part.name == file_field and form.file is not None):
            raise _Stop(RequestRejected(400, "invalid_multipart", f"the form field {part.name!r} is given twice"))
        if len(form.fields) >= MAX_FIELDS:
            raise _Stop(RequestRejected(400, "invalid_multipart", "too many form fields"))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part.data.extend(data[start:end])
        if part.name == file_field:
            if len(part.data) > max_file_bytes:
                raise _Stop(
                    RequestRejected(413, "file_too_large", f"the upload is larger than {max_file_bytes} bytes")
                )
        elif len(part.data) > max_field_bytes:
            raise _Stop(
                RequestRejected(413, "field_too_large", f"the form field {part.name!r} is over {max_field_bytes} bytes")
            )

    def on_part_end() -> None:
        if part.name == file_field:
            form.file = bytes(part.data)
            form.filename = part.filename
        elif part.name is not None:
            form.fields[part.name] = bytes(part.data)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except _Stop as stop:
        raise stop.error from None
    except FormParserError:
        raise RequestRejected(400, "invalid_multipart", "the multipart body cannot be parsed") from None
    return form


class _Stop(Exception):
    def __init__(self, error: RequestRejected) -> None:
        super().__init__(error.message)
        self.error = error
