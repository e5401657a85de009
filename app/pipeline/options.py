"""The typed options of each kind of result, one declaration per field.

Each options class is a msgspec ``Struct``. A field's annotation (type, range, description)
and its default are its one declaration, and drive:
- parsing a form of strings (:meth:`Options.from_form`; every way in maps onto these classes):
  booleans as true/false/1/0/yes/no/on/off, choices in any case (``jpg`` = ``jpeg``), colours in
  every form ``effects.colors`` reads, JSON fields decoded; a missing or blank field is its default;
- validation by msgspec against the declared types and ranges, a bad value being a
  :class:`BadOption` naming the field and saying what the declaration expects;
- the result cache's key (:meth:`Options.cache_fields`: the values that decide the bytes);
- the form's schema in the OpenAPI document (:meth:`Options.form_schema`, msgspec's JSON Schema).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Mapping

import msgspec
from msgspec import Meta, inspect as mi

import effects
from app.pipeline.errors import BadOption
from effects import ParamError
from effects.colors import FORMS as COLOR_FORMS, hex_color, parse_color

MAX_EFFECTS = 4
WHITE = (255, 255, 255)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_ALIASES = {"jpg": "jpeg"}
_AT_FIELD = re.compile(r"at `\$\.(\w+)")  # where a msgspec.ValidationError is


class Color(tuple):
    """An sRGB colour ``(r, g, b)``, 0-255; in a form, any text :func:`effects.colors.parse_color` reads."""

    __slots__ = ()

    def __str__(self) -> str:
        return hex_color(self)


Quality = Annotated[int, Meta(ge=1, le=100, description="JPEG/WebP quality (WebP: 100 = lossless); ignored for PNG")]
Refine = Annotated[bool, Meta(description="re-estimate the subject's colours at soft edges (hair, fur) "
                                          "so they lose the old background's tint")]
UseCache = Annotated[bool, Meta(description="read and write the result cache")]


def _format(*formats: str, description: str) -> Any:
    return Annotated[Literal[formats], Meta(description=description)]  # type: ignore[valid-type]


class Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields every kind of result has; subclasses declare theirs. ``KIND`` names the result in cache keys."""

    KIND: ClassVar[str]
    use_cache: UseCache = True

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> "Options":
        """Options from form fields (strings); fields the class does not declare are not read here
        (:func:`unknown_fields` finds them)."""
        values, given = {}, {}
        for field in _fields(cls):
            raw = form.get(field.name)
            raw = raw.strip() if raw is not None else ""
            if raw:
                given[field.name] = raw
                values[field.name] = field.prepare(raw)
            elif field.required:
                raise BadOption(field.name, f"required: {field.expected}")
        try:  # one conversion of the whole form: msgspec checks every declared type and range
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            name = _AT_FIELD.search(str(exc)).group(1)  # type: ignore[union-attr]
            raise next(f for f in _fields(cls) if f.name == name).refusal(given[name]) from None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return cls.__struct_fields__

    @classmethod
    def form_schema(cls) -> dict[str, Any]:
        """The JSON Schema of each form field (JSON-valued fields are strings in a form)."""
        (schema,), components = msgspec.json.schema_components([cls], schema_hook=_color_schema,
                                                                  ref_template="{name}")
        properties = dict(components[schema["$ref"]]["properties"])
        for field in _fields(cls):
            if field.kind in ("json", "color"):
                description = properties[field.name].get("description")
                properties[field.name] = {"type": "string", "description": description, **field.schema_default}
        return properties

    def resolved(self) -> "Options":
        """The options of the result to make (a front for another kind of result maps onto it)."""
        return self

    def irrelevant(self) -> tuple[str, ...]:
        """Fields whose values do not change this result's bytes (left out of the cache key)."""
        return ("quality",) if getattr(self, "format", None) == "png" else ()  # PNG is lossless

    def cache_fields(self) -> dict[str, Any]:
        """The options that decide the output's bytes, normalised: the result cache's key."""
        skip = {"use_cache", *self.irrelevant()}
        return {name: msgspec.to_builtins(getattr(self, name)) for name in self.__struct_fields__ if name not in skip}


class RemoveOptions(Options, frozen=True):
    """The subject on a transparent background, or its mask."""

    KIND = "remove"
    format: _format("png", "webp", description="output format (transparent background)") = "png"
    only_mask: Annotated[bool, Meta(description="return the 8-bit mask instead")] = False
    quality: Quality = 90
    refine_foreground: Refine = False

    def irrelevant(self) -> tuple[str, ...]:
        return (*super().irrelevant(), "refine_foreground") if self.only_mask else super().irrelevant()


class ChangeColorOptions(Options, frozen=True):
    """The subject over a solid colour."""

    KIND = "change_color"
    color: Annotated[Color, Meta(description=COLOR_FORMS)] = Color(WHITE)
    format: _format("jpeg", "png", "webp", description="output format (jpg = jpeg)") = "jpeg"
    quality: Quality = 90
    refine_foreground: Refine = False


class RemoveBackgroundOptions(Options, frozen=True):
    """POST /remove-background, the original service's fields: a front for the two above."""

    KIND = "remove"
    output_format: _format("png", "jpeg", "webp", description="png/webp: transparent; jpeg: over white") = "png"
    quality: Quality = 90

    def resolved(self) -> Options:
        """The equivalent request to /api/bg/remove or /api/bg/change_color (sharing their cache entries)."""
        if self.output_format == "jpeg":
            return ChangeColorOptions(format="jpeg", quality=self.quality, use_cache=self.use_cache)
        return RemoveOptions(format=self.output_format, quality=self.quality, use_cache=self.use_cache)


_EFFECTS_EXAMPLE = 'e.g. ["blackwhite", "popart"]'


class ProcessOptions(Options, frozen=True):
    """POST /api/v2/process: which effects with which (resolved, checked) parameters, and the output."""

    KIND = "process"
    effects: Annotated[list, Meta(
        min_length=1, max_length=MAX_EFFECTS,
        description=f"JSON array of 1-{MAX_EFFECTS} effect names, {_EFFECTS_EXAMPLE} (GET /api/v2/effects lists them)",
        extra={"expected": f"a JSON array of 1 to {MAX_EFFECTS} effect names, {_EFFECTS_EXAMPLE}"},
    )]
    # After parsing: each effect's resolved parameters, in the order of ``effects``.
    effect_params: Annotated[dict, Meta(
        description='JSON object keyed by effect name, e.g. {"dither": {"dot_spacing": 3}}',
        extra={"expected": 'a JSON object keyed by effect name, e.g. {"dither": {"dot_spacing": 3}}'},
    )] = {}
    remove_background: Annotated[bool, Meta(
        description="effects act on the cut-out subject (false: on the whole photo)")] = True
    # None: transparent (white under JPEG, which has no transparency)
    background: Annotated[Color | None, Meta(description=f"transparent, or a colour laid under each result "
                                                         f"({COLOR_FORMS})", extra={"default": "transparent"})] = None
    format: _format("png", "webp", "jpeg", description="output format of every image") = "png"
    quality: Quality = 90
    refine_foreground: Refine = False

    def __post_init__(self) -> None:
        names = self.effects
        try:
            for name in names:
                effects.get(name)  # the registry's own check and message for an unknown name
        except ParamError as exc:
            raise BadOption(exc.field, exc.message) from None
        if len(set(names)) != len(names):
            raise BadOption("effects", "each effect may appear once (results are keyed by name)")
        for key in self.effect_params:
            if key not in names:
                raise BadOption(f"effect_params.{key}", f"parameters for an effect not in `effects` ({', '.join(names)})")
        resolved = {}
        for name in names:
            try:
                resolved[name] = effects.resolve(name, self.effect_params.get(name), path=f"effect_params.{name}")
            except ParamError as exc:
                raise BadOption(exc.field, exc.message) from None
        msgspec.structs.force_setattr(self, "effect_params", resolved)
        if self.background is None and self.format == "jpeg":
            msgspec.structs.force_setattr(self, "background", Color(WHITE))

    def public_params(self) -> dict[str, dict[str, Any]]:
        """Each effect's parameters as applied, as JSON values (colours as #rrggbb)."""
        return {name: effects.get(name).public(params) for name, params in self.effect_params.items()}


def _color_schema(t: type) -> dict[str, Any]:
    if t is Color:
        return {"type": "string"}
    raise NotImplementedError


def unknown_fields(options: type[Options], given: list[str], taker: str, also: tuple[str, ...] = ()) -> BadOption | None:
    """A form field the options do not declare is a 400 naming it, not silently ignored: someone
    migrating from another API (``crop=true``, ``bg_image=@x.jpg``) must learn it had no effect."""
    allowed = {*options.field_names(), *also}
    unknown = [name for name in dict.fromkeys(given) if name not in allowed]
    if not unknown:
        return None
    listed = ", ".join(repr(name[:40]) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
    return BadOption(unknown[0][:100], f"unknown field{'s' if len(unknown) > 1 else ''} {listed}; "
                                       f"{taker} takes {', '.join(sorted(allowed))}")


# -- reading a form, from the declaration -------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # bool | choice | int | color | json
    expected: str  # what a valid value is, for error messages
    required: bool
    optional: bool  # None allowed (colour: "transparent")
    schema_default: Mapping[str, Any]  # the default as the form writes it, for the schema

    def prepare(self, raw: str) -> Any:
        """The form's text as the declared type reads it (msgspec then checks it): booleans and
        choices in their spellings, JSON decoded; colours parsed here (their own messages)."""
        kind = self.kind
        if kind == "bool":
            return True if raw.lower() in _TRUE else False if raw.lower() in _FALSE else raw
        if kind == "choice":
            return _ALIASES.get(raw.lower(), raw.lower())
        if kind == "json":
            return _json(self.name, raw)
        if kind == "color":
            if self.optional and raw.lower() == "transparent":
                return None
            try:
                return Color(parse_color(raw))
            except ValueError as exc:
                raise BadOption(self.name, str(exc)) from None
        return raw

    def refusal(self, raw: str) -> BadOption:
        """The 400 for a value msgspec refused: what the declaration expects, and what came."""
        if self.kind == "json":
            return BadOption(self.name, f"expected {self.expected}")
        got: Any = raw
        if self.kind == "int":
            try:
                got = int(raw)
            except ValueError:
                pass
        return BadOption(self.name, f"expected {self.expected}, got {got!r}")


@functools.cache
def _fields(cls: type[Options]) -> tuple[_Field, ...]:
    """The class's fields as the form reader needs them, from msgspec's view of the declaration;
    its own fields first, the common ones (``use_cache``) last."""
    fields = []
    for f in mi.type_info(cls).fields:
        t, extra = f.type, {}
        if isinstance(t, mi.Metadata):
            t, extra = t.type, t.extra or {}
        optional = isinstance(t, mi.UnionType) and any(isinstance(x, mi.NoneType) for x in t.types)
        if optional:
            t = next(x for x in t.types if not isinstance(x, mi.NoneType))
        if isinstance(t, mi.BoolType):
            kind, expected = "bool", "true or false"
        elif isinstance(t, mi.LiteralType):
            kind, expected = "choice", "one of " + ", ".join(t.values)
        elif isinstance(t, mi.IntType):
            kind, expected = "int", f"an integer from {t.ge} to {t.le}"
        elif isinstance(t, mi.CustomType) and t.cls is Color:
            kind, expected = "color", COLOR_FORMS
        else:  # a list or an object, sent as JSON text
            kind, expected = "json", extra.get("expected", "JSON")
        # a colour's default as a form writes it; a JSON field's default is its absence
        schema_default = {"default": str(extra.get("default", f.default))} if kind == "color" else {}
        fields.append(_Field(f.name, kind, expected, f.required, optional, schema_default))
    own = [f for f in fields if f.name not in Options.__struct_fields__]
    return (*own, *(f for f in fields if f.name in Options.__struct_fields__))


def _json(field: str, raw: str) -> Any:
    try:
        if raw.startswith("\ufeff"):  # as json.loads says it (one decoder for all: loads makes one per call)
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        return _DECODER.decode(raw)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else (str(exc) or "nested too deeply")
        raise BadOption(field, f"malformed JSON ({reason})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
