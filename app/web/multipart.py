"""werkzeug's multipart parser, with part headers read as Latin-1 when they are not UTF-8, and
each of its limits named in its own error (``app.request_class = UploadRequest``).

The most parts a form may have (the file and its option fields; v2 has the most: 8 + use_cache),
and the most bytes one non-file field may hold (Flask's default, stated: no option comes near it).
"""

from __future__ import annotations

import re
from typing import IO
from urllib.parse import unquote_to_bytes

import flask
from werkzeug.datastructures import FileStorage, Headers, MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from app.web.errors import FieldTooLarge, TooManyFields

MAX_FORM_PARTS = 32
MAX_FIELD_BYTES = 500_000

# -- multipart parsing ---------------------------------------------------------------------
#
# werkzeug's multipart parser, with two differences (werkzeug 3.1, formparser.MultiPartParser.parse):
# - Part headers that are not UTF-8 are read as Latin-1. werkzeug decodes each header line with
#   a strict ``bytes.decode()`` (sansio/multipart.py, MultipartDecoder._parse_headers); a raw
#   0xE9 in ``filename="caf\xe9.jpg"`` (curl, older clients in a Latin-1 locale) raised
#   UnicodeDecodeError, a ValueError, which FormDataParser.parse swallows (``silent=True``) and
#   answers with an empty form: the file and every field vanished (400 missing_file).
# - Its limits raise one RequestEntityTooLarge for three causes (413 file_too_large for all):
#   here too many parts is TooManyFields (413 too_many_fields) and a large non-file field is
#   FieldTooLarge (413 field_too_large); a body over MAX_CONTENT_LENGTH stays werkzeug's 413
#   (file_too_large), and a file over MAX_FILE_SIZE_MB is the upload reader's (app/web/endpoints.py).

_HEADER_LINE = re.compile(rb"[^\r\n]+")


def _utf8_line(match: re.Match[bytes]) -> bytes:
    line = match.group()
    try:
        line.decode("utf-8")
        return line
    except UnicodeDecodeError:
        return line.decode("latin-1").encode("utf-8")  # Latin-1 maps every byte: never fails


class _Decoder(MultipartDecoder):
    def _parse_headers(self, data: bytes | bytearray) -> Headers:
        return super()._parse_headers(_HEADER_LINE.sub(_utf8_line, bytes(data)))

    def receive_data(self, data: bytes | None) -> None:
        try:
            super().receive_data(data)
        except RequestEntityTooLarge:  # unconsumed bytes over the limit: a part's headers, or a preamble
            raise FieldTooLarge(f"a part's headers (or the text before the first part) exceed the "
                                f"{_kb(self.max_form_memory_size)} a form field may hold") from None


class _MultiPartParser(MultiPartParser):
    def parse(
        self, stream: IO[bytes], boundary: bytes, content_length: int | None
    ) -> tuple[MultiDict[str, str], MultiDict[str, FileStorage]]:
        decoder = _Decoder(boundary, max_form_memory_size=self.max_form_memory_size)  # parts counted here
        fields: list[tuple[str, str]] = []
        files: list[tuple[str, FileStorage]] = []
        parts = 0
        current: Field | File | None = None
        container: list[bytes] | IO[bytes] = []
        field_size: int | None = None
        while True:
            data = stream.read(self.buffer_size)
            decoder.receive_data(data or None)
            event = decoder.next_event()
            while not isinstance(event, (Epilogue, NeedData)):
                if isinstance(event, (Field, File)):
                    parts += 1
                    if self.max_form_parts is not None and parts > self.max_form_parts:
                        raise TooManyFields(f"the form has more than {self.max_form_parts} parts; send the image "
                                            "in the field 'file' and only the option fields the endpoint takes")
                    current = event
                    if isinstance(event, Field):
                        field_size, container = 0, []
                    else:
                        field_size, container = None, self.start_file_streaming(event, content_length)
                elif isinstance(event, Data) and current is not None:
                    if field_size is not None and self.max_form_memory_size is not None:
                        field_size += len(event.data)
                        if field_size > self.max_form_memory_size:
                            name = (current.name or "")[:100]
                            raise FieldTooLarge(f"{name or 'form field'}: larger than the "
                                                f"{_kb(self.max_form_memory_size)} a form field may hold; "
                                                "only the field 'file' may be large", field=name or None)
                    if isinstance(container, list):
                        container.append(event.data)
                    else:
                        container.write(event.data)
                    if not event.more_data:
                        if isinstance(current, Field):
                            value = b"".join(container).decode(self.get_part_charset(current.headers), "replace")
                            fields.append((current.name, value))
                        else:
                            container.seek(0)
                            files.append((current.name, FileStorage(container, current.filename, current.name,
                                                                    headers=current.headers)))
                event = decoder.next_event()
            if not data:
                break
        return self.cls(fields), self.cls(files)


class _FormDataParser(FormDataParser):
    def _parse_multipart(self, stream, mimetype, content_length, options):
        parser = _MultiPartParser(stream_factory=self.stream_factory, max_form_memory_size=self.max_form_memory_size,
                                  max_form_parts=self.max_form_parts, cls=self.cls)
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


    def _parse_urlencoded(self, stream, mimetype, content_length, options):
        """werkzeug's, with each name and value unquoted in pieces (its parse_qsl makes one object per
        %XX escape, ~230 bytes each: 11 MB of escapes held 1 GB), and a body over the limit refused
        (413) also when it comes chunked, where werkzeug's read() truncates it silently."""
        limit = self.max_form_memory_size
        too_large = FieldTooLarge(f"the urlencoded form is larger than the {_kb(limit)} form fields may hold; "
                                  "send the image as a multipart file part")
        if limit is not None and content_length is not None and content_length > limit:
            raise too_large
        data = stream.read()
        stream.read(1)  # past MAX_CONTENT_LENGTH: raises RequestEntityTooLarge
        if limit is not None and len(data) > limit:
            raise too_large
        data.decode()  # not UTF-8: ValueError, an empty form, as werkzeug's
        pairs = [pair.split(b"=", 1) for pair in data.split(b"&") if pair]
        form = self.cls((_unquote(pair[0]), _unquote(pair[1]) if len(pair) > 1 else "") for pair in pairs)
        return stream, form, self.cls()


class UploadRequest(flask.Request):
    """Flask's request with the multipart parser above (``app.request_class``)."""

    form_data_parser_class = _FormDataParser


def _kb(size: int | None) -> str:
    return f"{(size or 0) / 1000:g} KB"


def _unquote(raw: bytes, piece: int = 1 << 16) -> str:
    """parse_qsl's unquote_plus, a piece at a time, never splitting an escape."""
    raw = raw.replace(b"+", b" ")
    out, start = bytearray(), 0
    while start < len(raw):
        end = min(start + piece, len(raw))
        if end < len(raw):
            cut = raw.rfind(b"%", end - 2, end)
            end = cut if cut > start else end
        out += unquote_to_bytes(raw[start:end])
        start = end
    return out.decode("utf-8", "werkzeug.url_quote")
