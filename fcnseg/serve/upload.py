"""An uploaded image, into memory only: the request body read under a size limit, then the raw bytes or the multipart file part.

Nothing touches the disk (Starlette's own form parser spools files over 1 MiB to a temporary file;
this one keeps every byte in memory and never holds more than the limit). The limit is enforced
while the body arrives: a declared Content-Length over it is refused before reading anything, and
a chunked or understated body is cut off the moment it passes the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from fcnseg.files import format_bytes

# Content types taken as the image file itself; any image/* is too. Pillow tells the format from the bytes.
RAW_TYPES = ("application/octet-stream",)
MULTIPART_TYPE = "multipart/form-data"
FILE_FIELDS = ("image", "file")  # the multipart field names looked for first
# Room for multipart framing (boundaries, part headers, small form fields) on top of the file limit,
# so that a file of exactly the limit is taken whichever way it is sent.
MULTIPART_SLACK = 16 * 1024  # bytes


class UploadError(Exception):
    """A request whose body cannot be taken; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client hung up before its upload arrived in full: nobody is left to answer, only a log line to write."""

    def __init__(self, received: int, declared: int | None):
        self.received, self.declared = received, declared
        of = f" of {declared:,}" if declared is not None else ""
        super().__init__(f"the client hung up after {received:,}{of} bytes of its upload")


@dataclass
class Upload:
    """The image file's bytes and its name (from the multipart part or the ``X-Filename`` header; may be None)."""

    data: bytes
    name: str | None
    body_bytes: int  # the whole request body, multipart framing included


def too_large(limit: int) -> UploadError:
    return UploadError(413, f"upload is larger than this server's limit of {format_bytes(limit)} per file (--max-upload-mb)")


def check_content_type(content_type: str | None) -> str:
    """``"raw"`` or ``"multipart"`` for a request's Content-Type header (none: raw).

    Raises:
        UploadError: 415 for any other type (a form, JSON, text...).
    """
    if not content_type:
        return "raw"
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == MULTIPART_TYPE:
        return "multipart"
    if kind.startswith("image/") or kind in RAW_TYPES:
        return "raw"
    raise UploadError(
        415,
        f"Content-Type {kind!r} is not an image upload; send the file as the raw body with Content-Type "
        f"image/* or application/octet-stream, or as multipart/form-data with a file field 'image'",
    )


async def read_body(chunks: AsyncIterator[bytes], content_length: str | None, limit: int) -> bytes:
    """The request body, refusing it as soon as it is known to exceed ``limit`` bytes.

    Raises:
        UploadError: 413 when the declared or the received length exceeds ``limit``; 400 for a
            Content-Length that is not a number.
        ClientGone: the client hung up mid-upload (with the bytes received and declared).
    """
    declared = None
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise UploadError(400, f"Content-Length {content_length!r} is not a number of bytes") from None
        if declared > limit:
            raise too_large(limit)
    body = bytearray()
    try:
        async for chunk in chunks:
            if len(body) + len(chunk) > limit:
                raise too_large(limit)
            body += chunk
    except ClientDisconnect:
        raise ClientGone(len(body), declared) from None
    return bytes(body)


def _disposition(headers: dict[bytes, bytes]) -> tuple[str | None, str | None]:
    """``(field name, file name)`` from a part's Content-Disposition header."""
    _, options = parse_options_header(headers.get(b"content-disposition", b""))
    name = options.get(b"name")
    filename = options.get(b"filename")
    return (
        name.decode("utf-8", "replace") if name is not None else None,
        filename.decode("utf-8", "replace") if filename is not None else None,
    )


def file_from_multipart(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """The image part of a multipart/form-data body: the field named ``image`` or ``file``, else the first file part.

    Returns:
        ``(the part's bytes, its file name or None)``.
    Raises:
        UploadError: 422 when the body does not parse or holds no file part.
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError(422, "multipart/form-data without a boundary in its Content-Type")
    parts: list[dict] = []
    header_field, header_value = bytearray(), bytearray()

    def on_part_begin() -> None:
        parts.append({"headers": {}, "data": bytearray()})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1]["headers"][bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"].extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise UploadError(422, f"the multipart/form-data body does not parse ({e})") from None
    files = []
    for part in parts:
        field, filename = _disposition(part["headers"])
        if filename is not None or field in FILE_FIELDS:
            files.append((field, filename, part["data"]))
    if not files:
        raise UploadError(422, "the multipart/form-data body holds no file; send the image in a file field named 'image'")
    field, filename, data = next((f for f in files if f[0] in FILE_FIELDS), files[0])
    return bytes(data), filename


async def receive_upload(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    content_length: str | None,
    filename_header: str | None,
    limit: int,
) -> Upload:
    """Read a request into an :class:`Upload`: the raw body or the multipart file part, a file of at most ``limit`` bytes.

    A multipart body may exceed ``limit`` by :data:`MULTIPART_SLACK` bytes of framing; its file may not.

    Raises:
        UploadError: 415 wrong content type, 413 too large, 422 empty or malformed.
    """
    kind = check_content_type(content_type)
    body = await read_body(chunks, content_length, limit + (MULTIPART_SLACK if kind == "multipart" else 0))
    if kind == "multipart":
        data, name = file_from_multipart(body, content_type or "")
        if len(data) > limit:
            raise too_large(limit)
    else:
        data, name = body, filename_header
    if not data:
        raise UploadError(422, f"{name + ': ' if name else ''}the upload is empty (0 bytes); send an image file")
    return Upload(data, name or None, len(body))
