"""The command line's result options, derived from the one walk over the option declarations
(:func:`app.pipeline.options.fields`), never declared here a second time.

The rule: each field of the API's form is the flag ``--`` + its name with ``-`` for ``_``
(``bg_color`` would be ``--bg-color``), taking the text the form takes; a boolean is a pair,
``--only-mask`` / ``--no-only-mask``. The values given are gathered into a form (API names, the
text as typed) and read by the same :meth:`Options.from_form` the web endpoints call: the same
validation, the same messages. Which kind of result the form is for follows the API's endpoints:
``--effects`` is ``POST /api/v2/process``, ``--color`` is ``POST /api/bg/change_color``, anything
else ``POST /api/bg/remove``; a flag that kind does not take is refused as the endpoint refuses
the field (:func:`app.pipeline.options.unknown_fields`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Mapping

import click

from app.pipeline.errors import BadOption
from app.pipeline.options import (
    STROKE_FIELDS, ChangeColorOptions, OptionField, Options, ProcessOptions, RemoveOptions, fields, unknown_fields,
)


@dataclass(frozen=True)
class Result:
    """A kind of result: its options class, the endpoint that makes it, and the flag that asks for it."""

    name: str
    options: type[Options]
    endpoint: str
    chosen_by: str | None


# In the order they are chosen: the first whose field was given.
RESULTS = (
    Result("process", ProcessOptions, "/api/v2/process", "effects"),
    Result("change_color", ChangeColorOptions, "/api/bg/change_color", "color"),
    Result("remove", RemoveOptions, "/api/bg/remove", None),
)
# Fields about how the server sends its answer, not about the images: the command line writes files.
TRANSPORT = {"response"}
# The image laid under the subject with background=image: a file, as the API's upload field of that name.
BACKGROUND_FILE = "background_file"
SECTION = "Result options (the API's form fields, --NAME for NAME)"


def flag(name: str) -> str:
    """The flag of a form field: ``bg_color`` -> ``--bg-color``."""
    return "--" + name.replace("_", "-")


def walk() -> dict[str, list[tuple[Result, OptionField]]]:
    """Every form field of every kind of result, in the walk's order, with the results that take it."""
    out: dict[str, list[tuple[Result, OptionField]]] = {}
    for result in RESULTS:
        for field in fields(result.options):
            if field.name not in TRANSPORT:
                out.setdefault(field.name, []).append((result, field))
    # the fields that choose a kind of result first, then the walk's order
    first = [r.chosen_by for r in RESULTS if r.chosen_by]
    return {name: out[name] for name in [*first, *(n for n in out if n not in first)]}


class OptionFlag(click.Option):
    """A flag derived from a form field; ``section`` groups it in --help."""

    def __init__(self, *args: Any, section: str = SECTION, field_name: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.section = section
        self.field_name = field_name


def option_flags() -> list[click.Option]:
    """One click option per form field (see the module's rule); each value stays text (or None when
    not given) until :func:`request_from` reads the form."""
    params: list[click.Option] = []
    for name, takers in walk().items():
        field = takers[0][1]
        decls = [f"{flag(name)}/--no-{name.replace('_', '-')}" if field.kind == "bool" else flag(name), name]
        params.append(OptionFlag(decls, default=None, help=_help(takers), section=SECTION, field_name=name,
                                 metavar=None if field.kind == "bool" else _metavar(takers)))
    params.append(OptionFlag([flag(BACKGROUND_FILE), BACKGROUND_FILE], default=None, section=SECTION,
                             type=click.Path(dir_okay=False, exists=True, readable=True), metavar="FILE",
                             help="an image laid under the subject (implies --background image), as the API's "
                                  "background_file upload"))
    return params


def _metavar(takers: list[tuple[Result, OptionField]]) -> str:
    field = takers[0][1]
    if field.name in STROKE_FIELDS:
        return "JSON|FILE"
    if field.kind == "choice":
        choices = list(dict.fromkeys(c for _, f in takers for c in f.choices))
        return "[" + "|".join(choices) + "]"
    return {"int": "INT", "float": "NUMBER", "percent": "PERCENT", "json": "JSON"}.get(
        field.kind, field.name.upper().rsplit("_", 1)[-1])


def _help(takers: list[tuple[Result, OptionField]]) -> str:
    main_result, field = takers[-1]  # the default result's declaration (remove), where it has the field
    text = field.description.rstrip(".")
    if field.kind in ("int", "float") and field.minimum is not None:
        text += f"; {field.expected}"
    shown = _shown(field)
    others = [f"{_shown(f)} {_taken_with(r)}" for r, f in takers[:-1] if _shown(f) != shown]
    if shown is not None or others:
        text += " [default: " + "; ".join([*([shown] if shown is not None else []), *others]) + "]"
    if field.name in STROKE_FIELDS:  # the API's file part is a path here
        text = text.replace("as a file part", "(here: its file's path)")
    if len(takers) < len(RESULTS) and all(r.chosen_by != field.name for r, _ in takers):
        text += " (" + ", ".join(_taken_with(r) for r, _ in takers) + " only)"
    return text.replace("`", "")


def _taken_with(result: Result) -> str:
    return f"with {flag(result.chosen_by)}" if result.chosen_by else "without --effects or --color"


def _shown(field: OptionField) -> str | None:
    if field.required or field.default is None or field.kind == "json":
        return None
    if field.kind == "bool":
        return "true" if field.default else "false"
    if field.kind == "percent":
        return f"{field.default * 100:g}%"
    return str(field.default)


@dataclass(frozen=True)
class Request:
    """What the flags ask for: the kind of result, its form (API names, text as typed), the options
    read from it (checked), the background image's bytes when one was given, and the correction
    strokes given as mask images (field -> the image's bytes; the API's file parts)."""

    result: Result
    form: dict[str, str]
    options: Options
    background: bytes | None = None
    background_name: str | None = None
    masks: dict[str, bytes] = dataclass_field(default_factory=dict)

    @property
    def options_key(self) -> dict[str, Any]:
        """What decides the output's bytes (the result cache's key: values that change nothing left
        out, a preset as the fields it sets), with the background image's digest."""
        from app.pipeline.cache import upload_digest

        key: dict[str, Any] = {"kind": self.options.KIND, **self.options.cache_fields()}
        if self.background is not None:
            key[BACKGROUND_FILE] = upload_digest(self.background)
        for name, data in sorted(self.masks.items()):  # as the Job keys them
            key[name] = upload_digest(data)
        return key

    def form_json(self) -> str:
        return json.dumps(self.form, sort_keys=True, separators=(",", ":"))


def request_from(values: Mapping[str, Any], background_file: str | None = None,
                 implied: Mapping[str, str] | None = None) -> Request:
    """The request the flags' ``values`` make (``None``: not given). ``implied``: fields the command
    infers when their flag is absent (the output's extension as ``format``). A bad value raises the
    :class:`BadOption` the API answers with."""
    form = {name: _text(value) for name, value in values.items() if name in walk() and value is not None}
    masks = {}
    for name in STROKE_FIELDS:  # strokes as a mask image: the value names a file (JSON lines never do)
        text = form.get(name, "").strip()
        if text and text[0] not in "[{" and Path(text).is_file():
            try:
                masks[name] = Path(text).read_bytes()
            except OSError as exc:
                raise BadOption(name, f"cannot read the mask image {text}: {exc.strerror or exc}") from None
            del form[name]
    for name, value in (implied or {}).items():
        form.setdefault(name, value)
    result = next(r for r in RESULTS if r.chosen_by is None or r.chosen_by in form)
    refused = unknown_fields(result.options, [*form, *masks], taker=_taker(result), also=(BACKGROUND_FILE,))
    if refused:
        raise refused
    background = None
    if background_file is not None:
        if not form.get("background", "").strip():
            form["background"] = "image"  # the upload says what the background is, as the API reads it
        with open(background_file, "rb") as f:
            background = f.read()
    options = result.options.from_form(form).resolved()
    return Request(result, form, options, background, background_file, masks)


def _taker(result: Result) -> str:
    how = f"with {flag(result.chosen_by)}" if result.chosen_by else "without --effects or --color"
    return f"bgremove {how} (as {result.endpoint})"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def describe_error(exc: BadOption) -> str:
    """A refused option as a person reads it: the API's own message, and the flag that set it."""
    name = (exc.field or "").split(".", 1)[0]
    hint = f" (set by {flag(name)})" if name in walk() else ""
    return f"{exc.message}{hint}"
