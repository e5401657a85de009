"""The one public walk over the declared options (app.pipeline.options.fields) against msgspec's own
view of each class; the OpenAPI form is that walk; options stay immutable."""

import msgspec
import pytest
from msgspec import inspect as mi

from app.pipeline import options as opts
from app.pipeline.options import (
    ChangeColorOptions, Layout, ProcessOptions, RemoveBackgroundOptions, RemoveOptions, fields, form_schema,
)
from app.web.endpoints import FILE_FIELD

CLASSES = [RemoveOptions, ChangeColorOptions, RemoveBackgroundOptions, ProcessOptions]


def msgspec_view(cls):
    """(name, default, ge/min_length, le/max_length) of each declared field, the layout's flattened."""
    out = {}
    for f in mi.type_info(cls).fields:
        if isinstance(f.type, mi.StructType):
            out.update(msgspec_view(f.type.cls))
            continue
        t = f.type.type if isinstance(f.type, mi.Metadata) else f.type
        if isinstance(t, mi.UnionType):
            t = next(x for x in t.types if not isinstance(x, mi.NoneType))
            t = t.type if isinstance(t, mi.Metadata) else t
        default = f.default_factory() if f.default_factory is not msgspec.NODEFAULT else f.default
        out[f.name] = (default, getattr(t, "ge", getattr(t, "min_length", None)),
                       getattr(t, "le", getattr(t, "max_length", None)))
    return out


@pytest.mark.parametrize("cls", CLASSES)
def test_the_walk_lists_every_declared_field_with_its_default_and_bounds(cls):
    walk = fields(cls)
    assert {f.name: (f.default, f.minimum, f.maximum) for f in walk} == msgspec_view(cls)
    assert len(walk) == len(msgspec_view(cls))
    assert {f.name for f in walk if f.group == "layout"} == set(Layout.__struct_fields__)
    assert all(f.stage in ("decode", "layout", "segment", "compose", "effects", "encode", "cache") for f in walk)
    assert all(f.description for f in walk)


def test_the_walk_knows_types_choices_and_stages():
    by_name = {f.name: f for f in fields(ProcessOptions)}
    assert by_name["quality"].type is int and (by_name["quality"].minimum, by_name["quality"].maximum) == (1, 100)
    assert set(by_name["format"].choices) == {"png", "webp", "heic", "avif", "jpeg"} and by_name["format"].stage == "encode"
    assert by_name["effects"].required and by_name["effects"].stage == "effects"
    assert by_name["scale"].type is float and by_name["scale"].default is None
    assert by_name["shadow_color"].type is opts.Color and by_name["background"].default is None


@pytest.mark.parametrize("cls", CLASSES)
def test_the_openapi_form_is_the_walk(client, cls):
    spec = client.get("/openapi.json").get_json()
    path = {RemoveOptions: "/api/bg/remove", ChangeColorOptions: "/api/bg/change_color",
            RemoveBackgroundOptions: "/remove-background", ProcessOptions: "/api/v2/process"}[cls]
    properties = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {k: v for k, v in properties.items() if k not in FILE_FIELD} == \
        {f.name: dict(f.schema) for f in fields(cls)} == form_schema(cls)


def test_options_are_never_mutated_after_construction():
    """What a request leaves to the endpoint is filled in on a new instance (no force_setattr)."""
    given = msgspec.convert({"effects": ["8bit"], "format": "jpeg", "layout": {}}, ProcessOptions)
    done = given.completed()
    assert given.effect_params == {} and given.layout.background is None
    assert set(done.effect_params) == {"8bit"} and done.layout.background == opts.Background(("color", 255, 255, 255, 255))
    assert ChangeColorOptions.from_form({"color": "navy"}).layout.background[1:4] == (0, 0, 128)
    assert "force_setattr" not in open(opts.__file__).read()


def test_one_table_of_boolean_words():
    for word, value in opts.BOOLEAN_WORDS.items():
        assert RemoveOptions.from_form({"only_mask": word.upper()}).only_mask is value
