"""Request form fields declared once: memory and per-request cost of msgspec, pydantic v2, marshmallow, attrs+cattrs.

The library picked to declare our form fields (parsing, validation, the cache key's
normalisation, the JSON Schema of /openapi.json) must fit the 512 MB tier and add little
to each request. For each candidate, in a fresh interpreter of its own:
- memory: RSS (/proc/self/statm) after importing the library and declaring the forms of
  /api/v2/process and /api/bg/change_color, minus RSS of the same interpreter just before
  (it had imported only json, typing, dataclasses and the harness); "after 1st" also
  counts the first parse of each form (cattrs generates its structuring code then);
- parse: median us per call, --runs calls (batches of 100) after a warm-up, the best of
  --repeat fresh processes run round-robin (the spread is printed), turning a
  typical form (a dict of strings, as multipart gives them) into a typed, validated object:
  blank fields dropped, JSON fields decoded, str -> int/bool/enum with the range checks,
  the "jpg" alias, 1-4 known, distinct effect names, unknown fields refused;
- checks: the same forms the API takes or refuses (yes/no/on/off booleans, quality 0 /
  101 / abc, bad or duplicate effects, malformed JSON, an unknown field); "n/m" passed.
"ours" is the real app.pipeline.options (msgspec Structs and the form pre-pass; its memory is
the whole app, which it is part of: read the msgspec row for the library). The baseline is the
hand-written parser of app/pipeline/options.py as of commit ac63c26
(read with `git show`, imported from a temporary directory; skipped if git cannot show it).
Its memory is the module alone, on top of its own imports (effects, which the app loads
anyway, and BadOption, copied from that commit's app/web/errors.py without Flask); its
parse also resolves effect parameters through the registry and parses the colour (timed
apart below the table), work the candidates leave to effects/.
"x" columns are ratios to the msgspec row that accepts yes/no/on/off (the API's booleans):
MB after the first parse, us for each form. Sub-microsecond differences are noise on a
shared 2-core machine; compare the orders of magnitude.

    python benchmarks/bench_options.py [--runs 20000] [--repeat 3] [--only msgspec,pydantic,baseline]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "ac63c26"

# --- the harness every subprocess runs: {pre} imports, rss0, {declare}, rss1, 1st parse, rss2, timings, checks
HARNESS = '''
import json, typing, dataclasses, gc, os, sys
def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
{pre}
gc.collect()
_rss0 = _rss_mb()
{declare}
gc.collect()
_rss1 = _rss_mb()
V2_FORM = {v2_form!r}
CC_FORM = {cc_form!r}
parse_v2(V2_FORM); parse_cc(CC_FORM)
gc.collect()
_rss2 = _rss_mb()
import statistics, time
def _bench(fn, arg, runs, batch=100):
    for _ in range(min(2000, runs // 5)):
        fn(arg)
    per_call = []
    for _ in range(max(1, runs // batch)):
        t = time.perf_counter_ns()
        for _ in range(batch):
            fn(arg)
        per_call.append((time.perf_counter_ns() - t) / batch / 1000)
    return statistics.median(per_call)
_out = {{"mb_declared": _rss1 - _rss0, "mb_first_parse": _rss2 - _rss0,
        "us_v2": _bench(parse_v2, V2_FORM, {runs}), "us_cc": _bench(parse_cc, CC_FORM, {runs})}}
_checks = {checks!r}
_failed = []
for _name, _kind, _form, _want in _checks:
    try:
        _got = (parse_v2 if _kind == "v2" else parse_cc)(_form)
        _ok = _want != "refused" and all(getattr(_got, k) == v for k, v in _want.items())
        _why = "accepted" if _want == "refused" else repr({{k: getattr(_got, k) for k in _want}})
    except Exception as exc:
        _ok = _want == "refused"
        _why = type(exc).__name__
    if not _ok:
        _failed.append(_name + " (" + _why + ")")
_out["checks"] = (len(_checks) - len(_failed), len(_checks), _failed)
{extra}
print("\\n@@RESULT@@" + json.dumps(_out))
'''

V2_FORM = {"effects": '["dither", "popart"]', "effect_params": '{"dither": {"dot_spacing": 3}}',
           "remove_background": "true", "background": "transparent", "format": "webp", "quality": "85",
           "refine_foreground": "false"}
CC_FORM = {"color": "#00FF00", "format": "png", "quality": "90", "refine_foreground": "false"}

CHECKS = [  # (name, form kind, form, expected attributes or "refused")
    ("v2 typical", "v2", V2_FORM, {"remove_background": True, "format": "webp", "quality": 85, "refine_foreground": False}),
    ("v2 defaults", "v2", {"effects": '["8bit"]'}, {"remove_background": True, "format": "png", "quality": 90,
                                                     "refine_foreground": False}),
    ("blank field = default", "v2", {"effects": '["8bit"]', "quality": " ", "format": ""}, {"quality": 90, "format": "png"}),
    ("yes/no", "v2", {"effects": '["8bit"]', "remove_background": "no", "refine_foreground": "yes"},
     {"remove_background": False, "refine_foreground": True}),
    ("on/off", "v2", {"effects": '["8bit"]', "remove_background": "off", "refine_foreground": "on"},
     {"remove_background": False, "refine_foreground": True}),
    ("1/0", "cc", {"refine_foreground": "1"}, {"refine_foreground": True}),
    ("jpg alias", "cc", {"format": "JPG"}, {"format": "jpeg"}),
    ("cc default jpeg", "cc", {}, {"format": "jpeg", "quality": 90}),
    ("bool 'maybe'", "cc", {"refine_foreground": "maybe"}, "refused"),
    ("quality 0", "cc", {"quality": "0"}, "refused"),
    ("quality 101", "v2", {"effects": '["8bit"]', "quality": "101"}, "refused"),
    ("quality abc", "cc", {"quality": "abc"}, "refused"),
    ("format gif", "cc", {"format": "gif"}, "refused"),
    ("effects missing", "v2", {"format": "png"}, "refused"),
    ("effect unknown", "v2", {"effects": '["bogus"]'}, "refused"),
    ("5 effects", "v2", {"effects": '["8bit", "dither", "popart", "blackwhite", "8bit"]'}, "refused"),
    ("0 effects", "v2", {"effects": "[]"}, "refused"),
    ("duplicate effect", "v2", {"effects": '["8bit", "8bit"]'}, "refused"),
    ("malformed JSON", "v2", {"effects": '["8bit"'}, "refused"),
    ("unknown field", "cc", {"colour": "red"}, "refused"),
]

# --- the candidates: (label, module to look for, distribution for the version, code before rss0, declaration)
# Shared by the declarations (copied into each, so each subprocess stays independent):
COMMON = '''
EFFECT_NAMES = ("blackwhite", "dither", "popart", "8bit")
FORMAT_ALIASES = {"jpg": "jpeg"}
BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
def clean(form):
    """Blank fields are absent (multipart sends "" for an empty input); values stripped."""
    return {k: s for k, v in form.items() if (s := v.strip())}
'''

MSGSPEC = COMMON + '''
from typing import Annotated, Any, Literal
import msgspec

Effect = Literal["blackwhite", "dither", "popart", "8bit"]
Quality = Annotated[int, msgspec.Meta(ge=1, le=100, description="JPEG/WebP quality (WebP: 100 = lossless); ignored for PNG")]
Refine = Annotated[bool, msgspec.Meta(description="re-estimate the subject's colours at soft edges")]

class ProcessForm(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    effects: Annotated[list[Effect], msgspec.Meta(min_length=1, max_length=4, description="JSON array of 1-4 effect names")]
    effect_params: Annotated[dict[str, dict[str, Any]], msgspec.Meta(description="JSON object keyed by effect name")] = {}
    remove_background: bool = True
    background: Annotated[str, msgspec.Meta(description="transparent, or a colour laid under each result")] = "transparent"
    format: Literal["png", "webp", "jpeg"] = "png"
    quality: Quality = 90
    refine_foreground: Refine = False

    def __post_init__(self):
        if len(set(self.effects)) != len(self.effects):
            raise ValueError("each effect may appear once")

class ChangeColorForm(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    color: str = "#FFFFFF"
    format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: Quality = 90
    refine_foreground: Refine = False

def form_plan(cls):
    """How each form string becomes the value convert() types, read from the declaration itself:
    containers are JSON text, Literals are lowercased with aliases, bools take the API's words."""
    plan = {}
    for f in msgspec.structs.fields(cls):
        t = f.type
        if typing.get_origin(t) is Annotated:
            t = typing.get_args(t)[0]
        origin = typing.get_origin(t)
        if t is bool:
            plan[f.encode_name] = "bool"
        elif origin in (list, dict):
            plan[f.encode_name] = "json"
        elif origin is Literal:
            plan[f.encode_name] = "enum"
    return plan

def make_parser(cls, bool_words):
    plan = form_plan(cls)
    decode = msgspec.json.decode
    def parse(form):
        data = {}
        for k, v in form.items():
            v = v.strip()
            if not v:
                continue
            kind = plan.get(k)
            if kind == "json":
                v = decode(v)
            elif kind == "bool":
                if bool_words:
                    v = BOOL_WORDS.get(v.lower(), v)
            elif kind == "enum":
                v = v.lower()
                v = FORMAT_ALIASES.get(v, v)
            data[k] = v
        return msgspec.convert(data, cls, strict=False)
    return parse

parse_v2 = make_parser(ProcessForm, {bool_words})
parse_cc = make_parser(ChangeColorForm, {bool_words})
'''

PYDANTIC = COMMON + '''
from typing import Annotated, Any, Literal
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Json

def _unique(names):
    if len(set(names)) != len(names):
        raise ValueError("each effect may appear once")
    return names

def _format(v):
    if isinstance(v, str):
        v = v.lower()
        return FORMAT_ALIASES.get(v, v)
    return v

Effects = Json[Annotated[list[Literal["blackwhite", "dither", "popart", "8bit"]], Field(min_length=1, max_length=4),
                         AfterValidator(_unique)]]
Quality = Annotated[int, Field(ge=1, le=100, description="JPEG/WebP quality (WebP: 100 = lossless); ignored for PNG")]

class ProcessForm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    effects: Effects
    effect_params: Json[dict[str, dict[str, Any]]] = {}
    remove_background: bool = True
    background: str = "transparent"
    format: Annotated[Literal["png", "webp", "jpeg"], BeforeValidator(_format)] = "png"
    quality: Quality = 90
    refine_foreground: bool = False

class ChangeColorForm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    color: str = "#FFFFFF"
    format: Annotated[Literal["jpeg", "png", "webp"], BeforeValidator(_format)] = "jpeg"
    quality: Quality = 90
    refine_foreground: bool = False

_v2 = ProcessForm.model_validate
_cc = ChangeColorForm.model_validate
def parse_v2(form):
    return _v2(clean(form))
def parse_cc(form):
    return _cc(clean(form))
'''

MARSHMALLOW = COMMON + '''
from marshmallow import Schema, ValidationError, fields, post_load, validate

class JSONText(fields.Field):
    """A form field carrying JSON text, checked by an inner field once decoded."""
    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
    def _deserialize(self, value, attr, data, **kwargs):
        try:
            obj = json.loads(value)
        except ValueError:
            raise ValidationError("malformed JSON") from None
        return self.inner.deserialize(obj)

class Format(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        v = super()._deserialize(value, attr, data, **kwargs).lower()
        return FORMAT_ALIASES.get(v, v)

def _unique(names):
    if len(set(names)) != len(names):
        raise ValidationError("each effect may appear once")

@dataclasses.dataclass(frozen=True)
class ProcessForm:
    effects: list
    effect_params: dict
    remove_background: bool
    background: str
    format: str
    quality: int
    refine_foreground: bool

@dataclasses.dataclass(frozen=True)
class ChangeColorForm:
    color: str
    format: str
    quality: int
    refine_foreground: bool

Quality = lambda: fields.Integer(strict=False, validate=validate.Range(1, 100), load_default=90)

class ProcessSchema(Schema):
    effects = JSONText(fields.List(fields.String(validate=validate.OneOf(EFFECT_NAMES)),
                                   validate=[validate.Length(1, 4), _unique]), required=True)
    effect_params = JSONText(fields.Dict(keys=fields.String(), values=fields.Dict()), load_default=dict)
    remove_background = fields.Boolean(load_default=True)
    background = fields.String(load_default="transparent")
    format = Format(validate=validate.OneOf(("png", "webp", "jpeg")), load_default="png")
    quality = Quality()
    refine_foreground = fields.Boolean(load_default=False)
    @post_load
    def make(self, data, **kwargs):
        return ProcessForm(**data)

class ChangeColorSchema(Schema):
    color = fields.String(load_default="#FFFFFF")
    format = Format(validate=validate.OneOf(("jpeg", "png", "webp")), load_default="jpeg")
    quality = Quality()
    refine_foreground = fields.Boolean(load_default=False)
    @post_load
    def make(self, data, **kwargs):
        return ChangeColorForm(**data)

_v2 = ProcessSchema().load
_cc = ChangeColorSchema().load
def parse_v2(form):
    return _v2(clean(form))
def parse_cc(form):
    return _cc(clean(form))
'''

CATTRS = COMMON + '''
from typing import Any
import attrs
import cattrs
from attrs import validators as v

def _unique(inst, attr, names):
    if len(set(names)) != len(names):
        raise ValueError("each effect may appear once")

def _format(s):
    s = s.lower()
    return FORMAT_ALIASES.get(s, s)

Quality = lambda: attrs.field(default=90, validator=[v.ge(1), v.le(100)])

@attrs.frozen
class ProcessForm:
    effects: list[str] = attrs.field(validator=[v.min_len(1), v.max_len(4),
                                                v.deep_iterable(v.in_(EFFECT_NAMES)), _unique])
    effect_params: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    remove_background: bool = True
    background: str = "transparent"
    format: str = attrs.field(default="png", converter=_format, validator=v.in_(("png", "webp", "jpeg")))
    quality: int = Quality()
    refine_foreground: bool = False

@attrs.frozen
class ChangeColorForm:
    color: str = "#FFFFFF"
    format: str = attrs.field(default="jpeg", converter=_format, validator=v.in_(("jpeg", "png", "webp")))
    quality: int = Quality()
    refine_foreground: bool = False

def _bool(value, _type):
    # cattrs' own bool hook is bool(value): "false" -> True. The API's words, or refused.
    if isinstance(value, bool):
        return value
    try:
        return BOOL_WORDS[value.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"expected true or false, got {value!r}") from None

conv = cattrs.Converter(forbid_extra_keys=True)
conv.register_structure_hook(bool, _bool)

def _json_fields(cls):
    return frozenset(a.name for a in attrs.fields(cls) if typing.get_origin(a.type) in (list, dict))

def make_parser(cls):
    json_fields = _json_fields(cls)
    structure = conv.structure
    def parse(form):
        data = clean(form)
        for k in json_fields & data.keys():
            data[k] = json.loads(data[k])
        return structure(data, cls)
    return parse

parse_v2 = make_parser(ProcessForm)
parse_cc = make_parser(ChangeColorForm)
'''

BASELINE_PRE = '''
sys.path[:0] = [{tmp!r}, {repo!r}]
_rss_bare = _rss_mb()
import effects, effects.colors, _baseline_errors
gc.collect()
_rss_deps = _rss_mb()
'''

BASELINE = '''
import options_baseline as ob
parse_v2 = ob.ProcessOptions.from_form
parse_cc = ob.ChangeColorOptions.from_form
'''

BASELINE_EXTRA = '''
_given = json.loads(V2_FORM["effect_params"])
_names = json.loads(V2_FORM["effects"])
_out["us_resolve"] = _bench(lambda n: [effects.resolve(x, _given.get(x)) for x in n], _names, {runs})
_out["us_color"] = _bench(effects.colors.parse_color, CC_FORM["color"], {runs})
_out["mb_deps"] = _rss_deps - _rss_bare
'''

OURS_PRE = '''
sys.path[:0] = [{repo!r}]
_rss_bare = _rss_mb()
import app, effects, effects.colors  # the whole app, app.pipeline.options with it: its memory is not the module's alone
gc.collect()
_rss_deps = _rss_mb()
'''

OURS = '''
from app.pipeline.options import ChangeColorOptions, ProcessOptions
parse_v2 = ProcessOptions.from_form
parse_cc = ChangeColorOptions.from_form
'''

MSGSPEC_EXTRA = '''
_schema = msgspec.json.schema(ProcessForm)
_props = _schema["$defs"]["ProcessForm"]["properties"]
_out["schema"] = {k: _props[k] for k in ("effects", "format", "quality")}
_out["schema_required"] = _schema["$defs"]["ProcessForm"].get("required")
_out["schema_cc_ok"] = "ChangeColorForm" in msgspec.json.schema(ChangeColorForm)["$defs"]
'''

PYDANTIC_EXTRA = '''
_s = ProcessForm.model_json_schema()
_out["schema_keys"] = sorted(_s["properties"])
_out["schema_effects"] = _s["properties"]["effects"]
'''

# label, module, distribution, pre, declaration, extra, schema column
CANDIDATES = [
    ("msgspec", "msgspec", "msgspec", "", MSGSPEC.replace("{bool_words}", "True"), MSGSPEC_EXTRA,
     "yes: msgspec.json.schema"),
    ("msgspec, true/false/1/0 only", "msgspec", "msgspec", "", MSGSPEC.replace("{bool_words}", "False"), "",
     "yes: msgspec.json.schema"),
    ("pydantic v2", "pydantic", "pydantic", "", PYDANTIC, PYDANTIC_EXTRA, "yes: model_json_schema()"),
    ("marshmallow", "marshmallow", "marshmallow", "", MARSHMALLOW, "", "no: a plugin (apispec)"),
    ("attrs+cattrs", "cattrs", "cattrs", "", CATTRS, "", "no: none built in"),
]

BOOL_NOTES = {
    "msgspec": "yes/no/on/off: a word map in the form pre-pass (convert takes true/false/1/0 only)",
    "msgspec, true/false/1/0 only": "yes/no/on/off refused (msgspec's own str->bool)",
    "pydantic v2": "yes/no/on/off native (lax bool also takes y/n/t/f)",
    "marshmallow": "yes/no/on/off native (Boolean.truthy/falsy, also y/n/t/f)",
    "attrs+cattrs": "hook required: cattrs' bool is bool(value), 'false' -> True",
    "baseline (ac63c26)": "yes/no/on/off: its own parse_bool; unknown fields are the endpoint's check (a006fa2)",
    "ours (app.pipeline.options)": "msgspec Structs + the form pre-pass; unknown fields are the endpoint's check",
}


def run_one(label: str, pre: str, declare: str, extra: str, runs: int) -> dict:
    code = HARNESS.format(pre=pre, declare=declare, v2_form=V2_FORM, cc_form=CC_FORM, runs=runs,
                          checks=CHECKS, extra=extra.replace("{runs}", str(runs)))
    # cwd outside the repo: `-c` puts the cwd on sys.path, and only the baseline may see the repo
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())
    if proc.returncode != 0 or "@@RESULT@@" not in proc.stdout:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"{label}: subprocess failed: {tail}"}
    return json.loads(proc.stdout.rsplit("@@RESULT@@", 1)[1])


def version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version as v

    try:
        return v(dist)
    except PackageNotFoundError:
        return "?"


def git_show(path: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO), "show", f"{BASELINE_COMMIT}:{path}"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 and proc.stdout.strip() else None


def baseline_sources() -> tuple[dict[str, str] | None, str]:
    """The baseline parser as of BASELINE_COMMIT, importable alone: its one import from the
    web layer (BadOption, an exception class) comes from that commit's errors.py, copied
    without the rest of the file (Flask, the app package), so the app's import chain, now
    being edited, plays no part; effects/ is the working tree's."""
    options = git_show("app/pipeline/options.py")
    errors = git_show("app/web/errors.py")
    line = "from app.web.errors import BadOption"
    if options is None or errors is None or line not in options:
        return None, f"`git show {BASELINE_COMMIT}:app/pipeline/options.py` (and its BadOption) failed"
    tree = ast.parse(errors)
    classes = [ast.get_source_segment(errors, node) for node in tree.body
               if isinstance(node, ast.ClassDef) and node.name in ("ApiError", "BadOption")]
    if len(classes) != 2:
        return None, f"ApiError/BadOption not found in {BASELINE_COMMIT}:app/web/errors.py"
    return {"options_baseline.py": options.replace(line, "from _baseline_errors import BadOption"),
            "_baseline_errors.py": "from __future__ import annotations\n\n\n" + "\n\n\n".join(classes) + "\n"}, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000, help="timed calls per form (batches of 100)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per candidate (best median kept)")
    parser.add_argument("--only", default="", help="comma-separated labels' first words, e.g. msgspec,pydantic,baseline")
    args = parser.parse_args()
    only = {s.strip().lower() for s in args.only.split(",") if s.strip()}

    def wanted(label: str) -> bool:
        return not only or label.split()[0].split(",")[0].split("+")[0].lower() in only or label.lower() in only

    # (label, version, pre, declaration, extra, schema column): what each fresh subprocess runs
    jobs: list[tuple[str, str, str, str, str, str]] = []
    for label, module, dist, pre, declare, extra, schema in CANDIDATES:
        if not wanted(label):
            continue
        if importlib.util.find_spec(module) is None:
            print(f"{label}: not installed, skipped")
            continue
        jobs.append((label, version(dist), pre, declare, extra, schema))
    tmp = tempfile.mkdtemp(prefix="bench_options_")
    try:
        if wanted("baseline"):
            sources, why = baseline_sources()
            if sources is None:
                print(f"baseline: {why}, skipped")
            else:
                for name, text in sources.items():
                    Path(tmp, name).write_text(text)
                jobs.append(("baseline (ac63c26)", BASELINE_COMMIT, BASELINE_PRE.format(tmp=tmp, repo=str(REPO)),
                             BASELINE, BASELINE_EXTRA, "hand-written FIELDS dicts"))
        if wanted("ours"):
            jobs.append(("ours (app.pipeline.options)", "HEAD", OURS_PRE.format(repo=str(REPO)), OURS,
                         BASELINE_EXTRA, "yes: Options.form_schema (msgspec)"))
        # Round-robin, a fresh process each time: a slow spell of the shared machine lands on
        # one process of each candidate, not on all of one candidate's.
        runs_of: dict[str, list[dict]] = {job[0]: [] for job in jobs}
        for _ in range(args.repeat):
            for label, _, pre, declare, extra, _ in jobs:
                if label not in runs_of:
                    continue
                res = run_one(label, pre, declare, extra, args.runs)
                if "error" in res:
                    print(res["error"])
                    del runs_of[label]
                else:
                    runs_of[label].append(res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    results: list[tuple[str, str, dict, str]] = []
    spreads: list[str] = []
    for label, ver, _, _, _, schema in jobs:
        done = runs_of.get(label)
        if not done:
            continue
        r = dict(done[0])
        for key in ("us_v2", "us_cc", "us_resolve", "us_color"):
            if key in r:
                r[key] = min(d[key] for d in done)
        for key in ("mb_declared", "mb_first_parse"):
            r[key] = statistics.median(d[key] for d in done)
        results.append((label, ver, r, schema))
        spreads.append(f"{label} {r['us_v2']:.1f}-{max(d['us_v2'] for d in done):.1f}")

    ref = next((r for label, _, r, _ in results if label == "msgspec"), None)

    def ratio(value: float, key: str) -> str:
        if ref is None or ref[key] <= 0:
            return "-"
        return f"{value / ref[key]:.1f}x"

    print(f"\n# form fields declared once: Python {sys.version.split()[0]}, {args.runs} parses per form, "
          f"median us per call, best of {args.repeat} fresh processes; MB (median of them) = RSS over a bare "
          f"interpreter (json, typing, dataclasses); x = ratio to msgspec")
    head = (f"{'library':<30}{'version':>9}{'MB decl':>9}{'MB 1st':>8}{'us v2':>8}{'us cc':>8}"
            f"{'MB x':>7}{'v2 x':>7}{'cc x':>7}{'checks':>8}  JSON Schema")
    print(head)
    print("-" * len(head))
    for label, ver, r, schema in results:
        c_ok, c_all, _ = r["checks"]
        print(f"{label:<30}{ver:>9}{r['mb_declared']:>9.1f}{r['mb_first_parse']:>8.1f}{r['us_v2']:>8.1f}"
              f"{r['us_cc']:>8.1f}{ratio(r['mb_first_parse'], 'mb_first_parse'):>7}{ratio(r['us_v2'], 'us_v2'):>7}"
              f"{ratio(r['us_cc'], 'us_cc'):>7}{f'{c_ok}/{c_all}':>8}  {schema}")

    print(f"\nus v2 across the {args.repeat} processes (best-worst): {'; '.join(spreads)}")
    print("\nbooleans and failed checks:")
    for label, _, r, _ in results:
        failed = r["checks"][2]
        print(f"  {label}: {BOOL_NOTES.get(label, '')}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    no_hook = next((r for label, _, r, _ in results if label == "msgspec, true/false/1/0 only"), None)
    if ref is not None and no_hook is not None:
        print(f"  msgspec's yes/no/on/off map costs {ref['us_v2'] - no_hook['us_v2']:+.2f} us (v2 form), "
              f"{ref['us_cc'] - no_hook['us_cc']:+.2f} us (change_color form)")
    base = next((r for label, _, r, _ in results if label.startswith("baseline")), None)
    if base is not None:
        print(f"  baseline: its imports (effects: numpy, PIL; BadOption) add {base['mb_deps']:.1f} MB "
              f"before the module; of its parse, effects.resolve of the v2 form's effects is "
              f"{base['us_resolve']:.1f} us and parse_color of the colour {base['us_color']:.1f} us (work the candidates leave to effects/)")
    for label, _, r, _ in results:
        if "schema" in r:
            print(f"\nmsgspec.json.schema(ProcessForm) excerpt (required: {r['schema_required']}; "
                  f"ChangeColorForm: {'ok' if r['schema_cc_ok'] else 'missing'}):")
            for key, value in r["schema"].items():
                print(textwrap.indent(f"{key}: {json.dumps(value)}", "  "))
            print("  (effects, effect_params are JSON text in the form: /openapi.json wraps their schema as "
                  '{"type": "string", "contentMediaType": "application/json", "contentSchema": ...}; '
                  "pydantic's Json[] writes that itself)")
        if "schema_effects" in r:
            print(f"\npydantic model_json_schema(): properties {r['schema_keys']}; "
                  f"effects: {json.dumps(r['schema_effects'])}")


if __name__ == "__main__":
    main()
