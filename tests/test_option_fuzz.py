"""The option parsers under hostile values: a parsed result or a 400 naming the field, never anything else.

Every field of every options class (app/pipeline/options.py), and every parameter of every effect
inside ``effect_params``, gets arbitrary text, JSON, huge integers and out-of-range colour
forms (hypothesis, derandomized, bounded example counts). A value is either parsed into
something the service can use (its cache key can be built) or refused with
:class:`app.pipeline.errors.BadOption` naming that field; any other exception is a 500 in production.
A small set of the worst values then goes over HTTP to every endpoint: 400 JSON or 200, never 500.
"""

from __future__ import annotations

import io
import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from PIL import Image

import effects
import effects.schema
from app.pipeline.cache.keys import entry_key
from app.pipeline.errors import BadOption
from app.pipeline.options import ChangeColorOptions, Color, ProcessOptions, RemoveBackgroundOptions, RemoveOptions
from app.web.errors import status_of
from effects.colors import hex_color, parse_color
from tests.conftest import photo, post


def options_hex(colour) -> str:
    """The cache key's and the API's form of a colour option."""
    return str(Color(colour))

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FEW = settings(FUZZ, max_examples=60)

HUGE = 10**4000  # json.loads parses integers up to 4,300 digits (sys.int_info.str_digits_check_threshold)
CLASSES = [RemoveOptions, ChangeColorOptions, RemoveBackgroundOptions, ProcessOptions]
# ProcessOptions needs `effects`; the others need nothing.
BASE = {ProcessOptions: {"effects": '["blackwhite", "dither", "popart", "8bit"]'}}
EFFECT_PARAMS = [(e.name, p) for e in effects.EFFECTS.values() for p in e.params]

# Hand-picked values that broke (or might break) a parser: huge numbers, out-of-range colours,
# JSON edge cases, control characters, very long text.
NASTY = [
    "", " ", "\x00", "\t\n", "null", "true", "[]", "{}", '""', "NaN", "Infinity", "-Infinity", "1e999", "-1e999",
    "1e-999", "0x10", "1_000", "+5", "-0", "٣", "１２", "9" * 4000, "-" + "9" * 4000, "9" * 5000, "1" + "0" * 400 + ".5",
    "rgb(300,0,0)", "rgb(18,3072,0)", "rgba(300,0,0,255)", "rgb(200%,0%,0%)", "hsl(0,200%,50%)",
    "hsl(400,100%,50%)", "hsv(0,100%,300%)", "hsb(720,50%,50%)", "rgba(1,2,3,999)", "rgb(١,٢,٣)",
    "#FFF8", "#FFFFFF80", "256,0,0", "transparent", "TRANSPARENT", "x" * 100_000, "[" * 5000, "{\"a\":" * 3000,
    '["dither", "dither"]', '["dither", "8bit", "popart", "blackwhite", "dither"]', "[1, 2]", '[["dither"]]',
    '[{"a": 1}]', '{"dither": []}', '{"nope": {}}', '{"dither": {"preset": "modern"}}',
]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-HUGE, max_value=HUGE),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@st.composite
def colour_forms(draw) -> str:
    """Pillow's functional colour forms with any numbers, in and out of range."""
    name = draw(st.sampled_from(["rgb", "rgba", "RGB", "hsl", "hsv", "hsb"]))
    count = 4 if name == "rgba" else 3
    numbers = draw(st.lists(st.one_of(st.integers(0, 400), st.integers(0, 10**30),
                                      st.floats(0, 1000, allow_nan=False).map(lambda f: round(f, 2))),
                            min_size=count, max_size=count))
    percent = draw(st.booleans())
    parts = []
    for i, n in enumerate(numbers):
        text = str(n)
        if name.lower().startswith("rgb"):
            parts.append(text + ("%" if percent and i < 3 else ""))
        else:
            parts.append(text + ("%" if i else ""))
    return f"{name}({','.join(parts)})"


texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(NASTY),
    st.integers(min_value=-HUGE, max_value=HUGE).map(str),
    st.floats().map(repr),
    json_values.map(json.dumps),
    colour_forms(),
)


def check_parsed(opts) -> None:
    """A parsed result is usable: its cache key builds, and every colour and effect parameter is in range."""
    if hasattr(opts, "cache_fields"):
        fields = opts.cache_fields()
        entry_key("kind", "ab" * 32, {"model": "m"}, fields)  # canonical JSON of the options
    for name in ("color", "background"):
        colour = getattr(opts, name, None)
        if colour is not None:
            assert len(colour) == 3 and all(type(c) is int and 0 <= c <= 255 for c in colour), colour
    for name, params in getattr(opts, "effect_params", {}).items():
        effect = effects.get(name)
        for param in effect.params:
            value = params[param.name]
            if param.type in ("number", "integer") and value != effects.schema.AUTO:
                assert param.minimum <= value <= param.maximum and math.isfinite(value), (name, param.name, value)
            if param.type == "color":
                assert all(type(c) is int and 0 <= c <= 255 for c in value), (name, param.name, value)


def nested(field: str) -> bool:
    """A path inside effect_params (``effect_params.<effect>[.<parameter>]``, keys as the client sent them)."""
    return field.startswith("effect_params.")


def parse_or_refuse(cls, form: dict[str, str], allowed_fields: set[str]):
    """``cls.from_form(form)``: a usable result, or BadOption naming one of ``allowed_fields``; nothing else.
    With "effect_params" allowed, so is any path inside it (an unknown key is named as sent)."""
    try:
        opts = cls.from_form(form)
    except BadOption as exc:
        named = exc.field in allowed_fields or ("effect_params" in allowed_fields and nested(exc.field))
        assert named, (exc.field, allowed_fields, str(exc)[:200])
        assert exc.message.startswith(exc.field + ":") and status_of(exc) == 400
        return None
    check_parsed(opts)
    return opts


# -- every field of every class, one at a time ------------------------------------------

FIELD_CASES = [(cls, name) for cls in CLASSES for name in cls.field_names() if name != "use_cache"]


@pytest.mark.parametrize("cls, field", FIELD_CASES, ids=[f"{c.__name__}.{f}" for c, f in FIELD_CASES])
@FUZZ
@given(value=texts)
@example(value="9" * 4000)
@example(value="rgb(300,0,0)")
@example(value="1e999")
def test_every_field_parses_or_names_itself(cls, field, value):
    form = {**BASE.get(cls, {}), field: value}
    # effect_params errors name the path inside it (effect_params.dither.ink); the rest name the field itself
    parse_or_refuse(cls, form, {field})


@pytest.mark.parametrize("field", ["use_cache"])
@FEW
@given(value=texts)
def test_common_fields_parse_or_name_themselves(field, value):
    try:
        assert isinstance(getattr(RemoveOptions.from_form({field: value}), field), bool)
    except BadOption as exc:
        assert exc.field == field


# -- every parameter of every effect, inside effect_params ------------------------------

def param_values(param) -> st.SearchStrategy:
    """Values near and far from what the parameter takes, plus arbitrary JSON."""
    near: list[st.SearchStrategy] = [json_values]
    if param.type in ("number", "integer"):
        lo, hi = param.minimum, param.maximum
        near += [st.integers(int(lo) - 3, int(hi) + 3), st.floats(lo - 1, hi + 1),
                 st.integers(min_value=-HUGE, max_value=HUGE), st.sampled_from([HUGE, -HUGE, 2**63, 2**64 + 1, 1e308])]
    elif param.type == "color":
        near += [colour_forms(), st.sampled_from(NASTY),
                 st.lists(st.one_of(st.integers(-5, 300), st.integers(min_value=-HUGE, max_value=HUGE), st.booleans(),
                                    st.floats(0, 255)), min_size=2, max_size=4)]
    elif param.type == "enum":
        near += [st.sampled_from(param.choices).map(lambda c: c.upper()), st.sampled_from(param.choices + ("",))]
    return st.one_of(*near)


@pytest.mark.parametrize("effect, param", EFFECT_PARAMS, ids=[f"{e}.{p.name}" for e, p in EFFECT_PARAMS])
@FEW
@given(data=st.data())
def test_every_effect_parameter_parses_or_names_itself(effect, param, data):
    value = data.draw(param_values(param), label="value")
    form = {"effects": json.dumps([effect]), "effect_params": json.dumps({effect: {param.name: value}})}
    allowed = {f"effect_params.{effect}.{param.name}"}
    if effect == "dither" and param.name in ("ink", "paper"):
        allowed.add("effect_params.dither.ink")  # dither's cross-parameter rule: ink and paper must differ
    opts = parse_or_refuse(ProcessOptions, form, allowed)
    if opts is not None and not (param.type == "color" and isinstance(value, str)):
        resolved = opts.effect_params[effect][param.name]
        if param.type in ("number", "integer"):
            assert resolved == value
        elif param.type == "color":
            assert list(resolved) == list(value)
        else:
            assert resolved == value


@pytest.mark.parametrize("effect", list(effects.EFFECTS))
@FEW
@given(preset=json_values | st.sampled_from(["modern", "vintage", "clean", "MODERN", ""]))
def test_presets_parse_or_name_themselves(effect, preset):
    form = {"effects": json.dumps([effect]), "effect_params": json.dumps({effect: {"preset": preset}})}
    parse_or_refuse(ProcessOptions, form, {f"effect_params.{effect}.preset"})


@pytest.mark.parametrize("effect, param", [(e, p) for e, p in EFFECT_PARAMS if p.type in ("number", "integer")],
                         ids=lambda x: getattr(x, "name", x))
@pytest.mark.parametrize("huge", [HUGE, -HUGE, 2**1024, 10**4299])
def test_a_huge_integer_for_any_numeric_parameter_is_a_400(effect, param, huge):
    """Point 7: a 4,000-digit integer made math.isfinite raise OverflowError (a 500)."""
    text = json.dumps({effect: {param.name: huge}})
    form = {"effects": json.dumps([effect]), "effect_params": text}
    with pytest.raises(BadOption) as caught:
        ProcessOptions.from_form(form)
    assert caught.value.field == f"effect_params.{effect}.{param.name}"
    assert "digits" in caught.value.message and len(caught.value.message) < 200


def test_more_digits_than_json_parses_is_a_400_naming_effect_params():
    form = {"effects": '["dither"]', "effect_params": '{"dither": {"dot_spacing": ' + "9" * 5000 + "}}"}
    with pytest.raises(BadOption) as caught:
        ProcessOptions.from_form(form)
    assert caught.value.field == "effect_params" and "malformed JSON" in caught.value.message


# -- colours: out-of-range forms refused everywhere, normalisation one-to-one -------------

OUT_OF_RANGE = ["rgb(300,0,0)", "rgb(18,3072,0)", "rgb(256,0,0)", "rgba(300,0,0,255)", "rgba(0,0,0,256)",
                "rgb(101%,0%,0%)", "rgb(200%,0%,0%)", "hsl(0,200%,50%)", "hsl(0,100%,150%)", "hsl(361,100%,50%)",
                "hsv(0,100%,101%)", "hsb(0,300%,100%)"]
COLOUR_FIELDS = [
    (ChangeColorOptions, {}, "color", "color"),
    (ProcessOptions, {"effects": '["8bit"]'}, "background", "background"),
    (ProcessOptions, {"effects": '["dither"]'}, "effect_params:paper", "effect_params.dither.paper"),
    (ProcessOptions, {"effects": '["dither"]'}, "effect_params:ink", "effect_params.dither.ink"),
]


@pytest.mark.parametrize("text", OUT_OF_RANGE)
@pytest.mark.parametrize("cls, base, where, field", COLOUR_FIELDS, ids=[f for *_, f in COLOUR_FIELDS])
def test_out_of_range_colour_is_a_400_wherever_colours_are_parsed(cls, base, where, field, text):
    if where.startswith("effect_params:"):
        form = {**base, "effect_params": json.dumps({"dither": {where.split(":")[1]: text}})}
    else:
        form = {**base, where: text}
    with pytest.raises(BadOption) as caught:
        cls.from_form(form)
    assert caught.value.field == field and "0-" in caught.value.message


@pytest.mark.parametrize("text", ["rgb(255,0,0)", "rgb(100%,0%,0%)", "rgba(255,0,0,255)", "hsl(0,100%,50%)",
                                  "hsl(360,100%,50%)", "hsv(0,100%,100%)", "hsb(0,100%,100%)", "RGB(255, 0, 0)"])
def test_in_range_functional_forms_still_parse(text):
    assert parse_color(text) == (255, 0, 0)


def test_the_reported_collision_is_gone():
    """rgb(300,0,0) and rgb(18,3072,0) both normalised to #12c0000: the second was served the first's image."""
    for text in ("rgb(300,0,0)", "rgb(18,3072,0)"):
        with pytest.raises(BadOption):
            ChangeColorOptions.from_form({"color": text})
        with pytest.raises(BadOption):
            ProcessOptions.from_form({"effects": '["8bit"]', "background": text})
    # and the normalisation itself refuses such values rather than writing ambiguous text
    for to_hex in (options_hex, hex_color):
        for colour in ((300, 0, 0), (18, 3072, 0), (-1, 0, 0), (1, 2), (1.0, 2, 3), (True, 0, 0)):
            with pytest.raises(ValueError):
                to_hex(colour)


@FUZZ
@given(a=st.tuples(*[st.integers(0, 255)] * 3), b=st.tuples(*[st.integers(0, 255)] * 3))
def test_colour_normalisation_is_one_to_one(a, b):
    """The cache key form decodes back to the colour it came from, so two colours never share one."""
    for to_hex in (options_hex,):
        assert parse_color(to_hex(a)) == a
        assert len(to_hex(a)) == 7
        assert (to_hex(a) == to_hex(b)) == (a == b)


@FUZZ
@given(text=colour_forms() | texts)
def test_any_accepted_colour_has_channels_in_range(text):
    try:
        rgb = parse_color(text)
    except ValueError:
        return
    assert len(rgb) == 3 and all(type(c) is int and 0 <= c <= 255 for c in rgb), (text, rgb)
    assert parse_color(hex_color(rgb)) == rgb


# -- whole forms: several fields at once --------------------------------------------------

@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@FUZZ
@given(data=st.data())
def test_whole_forms_parse_or_name_one_of_their_fields(cls, data):
    names = list(cls.field_names())
    form = data.draw(st.dictionaries(st.sampled_from(names + ["unknown", "use_cache"]), texts, max_size=len(names)))
    # without `effects` a process form is refused naming it, whatever else it holds
    parse_or_refuse(cls, form, set(form) | ({"effects"} if cls is ProcessOptions else set()))


# -- over HTTP: the worst values, every endpoint ------------------------------------------

def small_jpeg() -> bytes:
    img = Image.open(photo("animal-1.jpg")).convert("RGB")
    img.thumbnail((48, 48))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


SMALL = small_jpeg()
WORST = ["9" * 4000, "-" + "9" * 4000, "rgb(300,0,0)", "rgb(18,3072,0)", "hsl(0,200%,50%)", "1e999", "NaN",
         "[" * 5000, "\x00", "x" * 50_000]
HTTP_CASES = (
    [("/api/bg/remove", {}, f) for f in RemoveOptions.field_names()]
    + [("/api/bg/change_color", {}, f) for f in ChangeColorOptions.field_names()]
    + [("/remove-background", {}, f) for f in RemoveBackgroundOptions.field_names()]
    + [("/api/v2/process", {"effects": '["8bit"]'}, f) for f in ProcessOptions.field_names()]
)


def check_http(resp, field: str | None = None):
    assert resp.status_code in (200, 400), (resp.status_code, resp.data[:300])
    if resp.status_code == 400:
        body = resp.get_json()
        assert resp.mimetype == "application/json" and set(body) == {"error"}
        assert body["error"]["code"] == "invalid_option" and body["error"]["message"]
        if field is not None:
            assert body["error"]["field"].split(".")[0] == field, body
    return resp


@pytest.mark.parametrize("endpoint, base, field", HTTP_CASES, ids=[f"{e}:{f}" for e, _, f in HTTP_CASES])
def test_worst_values_over_http_are_400_or_200_never_500(client, endpoint, base, field):
    for value in WORST:
        check_http(post(client, endpoint, SMALL, **{**base, field: value}), field)


@pytest.mark.parametrize("effect, param", EFFECT_PARAMS, ids=[f"{e}.{p.name}" for e, p in EFFECT_PARAMS])
def test_worst_effect_parameters_over_http_are_400(client, effect, param):
    values = [HUGE, -HUGE, 10**4299, "rgb(300,0,0)", "rgb(18,3072,0)", [300, 0, 0], [HUGE, 0, 0], {"a": [[]]}, None]
    for value in values:
        params = json.dumps({effect: {param.name: value}})
        resp = check_http(post(client, "/api/v2/process", SMALL, effects=json.dumps([effect]), effect_params=params))
        assert resp.status_code == 400, (param.name, value if not isinstance(value, int) else "huge")
        assert resp.get_json()["error"]["field"] == f"effect_params.{effect}.{param.name}"


def test_out_of_range_colours_over_http_are_400_and_in_range_ones_200(client):
    for endpoint, fields in [("/api/bg/change_color", {"color": "rgb(300,0,0)"}),
                             ("/api/bg/change_color", {"color": "rgb(18,3072,0)"}),
                             ("/api/v2/process", {"effects": '["8bit"]', "background": "rgb(300,0,0)"}),
                             ("/api/v2/process", {"effects": '["dither"]', "effect_params": '{"dither": {"paper": "rgb(300,0,0)"}}'}),
                             ("/api/v2/process", {"effects": '["dither"]', "effect_params": '{"dither": {"ink": "hsl(0,200%,50%)"}}'})]:
        resp = check_http(post(client, endpoint, SMALL, **fields))
        assert resp.status_code == 400, (endpoint, fields)
    ok = post(client, "/api/bg/change_color", SMALL, color="rgb(255,0,0)", format="png")
    assert ok.status_code == 200 and ok.mimetype == "image/png"
