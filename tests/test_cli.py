"""``bgremove``, the command line, run as a user runs it (the installed script, in a subprocess, on
the real model): one image, a folder, resuming, errors, Ctrl-C; its flags are the option walk's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from app.cli import flags
from app.cli.batch import Shard, output_names
from app.cli.main import main
from app.pipeline.errors import BadOption
from app.pipeline.correct import rasterize
from app.pipeline.options import ChangeColorOptions, ProcessOptions, RemoveOptions, Strokes, fields
from config.settings import ConfigError, from_layers, read_config_file
from tests.clikit import BGREMOVE, bgremove, decoded, manifest_lines, small_photos, start, summary
from tests.serverkit import ROOT

TEMPORARY = ".bgremove-tmp-"


# -- the flags are the walk ----------------------------------------------------------------------


def test_every_form_field_is_a_flag_by_the_naming_rule_and_nothing_else_is():
    walked = {f.name for cls in (RemoveOptions, ChangeColorOptions, ProcessOptions) for f in fields(cls)}
    declared = {p.name: p for p in flags.option_flags()}
    assert set(declared) == (walked - flags.TRANSPORT) | {"background_file"}
    for name, param in declared.items():
        assert flags.flag(name) in param.opts, (name, param.opts)
        assert "--" + name.replace("_", "-") == param.opts[0]
    only_mask = declared["only_mask"]
    assert only_mask.secondary_opts == ["--no-only-mask"]  # booleans are flag pairs
    help_text = CliRunner().invoke(main, ["batch", "--help"]).output
    for name in walked - flags.TRANSPORT:
        assert flags.flag(name) in help_text
    assert "--NAME for NAME" in help_text


@pytest.mark.parametrize("given, cls", [
    ({"quality": "500"}, RemoveOptions),
    ({"size": "huge"}, RemoveOptions),
    ({"background": "not-a-colour"}, RemoveOptions),
    ({"shadow": "sideways"}, RemoveOptions),
    ({"color": "chartreuse-ish"}, ChangeColorOptions),
    ({"effects": '["sepia"]'}, ProcessOptions),
    ({"effects": '["dither"]', "effect_params": '{"dither": {"dot_spacing": 99}}'}, ProcessOptions),
    ({"format": "zip", "only_mask": "true"}, RemoveOptions),
])
def test_a_bad_value_is_refused_with_the_apis_own_message(given, cls):
    with pytest.raises(BadOption) as api:
        cls.from_form(given).resolved()
    values = {name: (True if value == "true" else value) for name, value in given.items()}
    with pytest.raises(BadOption) as cli:
        flags.request_from(values)
    assert cli.value.message == api.value.message and cli.value.field == api.value.field


def test_the_result_follows_the_flags_as_the_endpoints_do():
    assert flags.request_from({}).result.endpoint == "/api/bg/remove"
    assert flags.request_from({"color": "navy"}).result.endpoint == "/api/bg/change_color"
    request = flags.request_from({"effects": '["dither"]', "size": "300x200", "crop": True})
    assert request.result.endpoint == "/api/v2/process" and request.form == {
        "effects": '["dither"]', "size": "300x200", "crop": "true"}
    with pytest.raises(BadOption) as refused:  # as /api/v2/process refuses the field
        flags.request_from({"effects": '["dither"]', "only_mask": True})
    assert refused.value.field == "only_mask" and "unknown field" in refused.value.message


def test_settings_from_a_file_the_environment_and_flags_each_over_the_last(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('max_queue = 3\nMAX_WORK_PIXELS = 4000000\nwarmup = false\nPNG_COMPRESS_LEVEL = 9\n')
    from_file = read_config_file(config)
    assert from_file == {"MAX_QUEUE": "3", "MAX_WORK_PIXELS": "4000000", "WARMUP": "false", "PNG_COMPRESS_LEVEL": "9"}
    settings = from_layers(("defaults", {"CACHE_BACKEND": "none"}), (str(config), from_file),
                           ("environment", {"MAX_QUEUE": "5"}), ("--setting", {"PNG_COMPRESS_LEVEL": "2"}))
    assert (settings.max_queue, settings.max_work_pixels, settings.png_compress_level) == (5, 4_000_000, 2)
    assert settings.cache_backend == "none" and settings.warmup is False
    with pytest.raises(ConfigError, match=r"^MAX_QUEUE \(from --setting\): expected an integer from 0 to 10000"):
        from_layers(("--setting", {"MAX_QUEUE": "lots"}))
    config.write_text("max_queeu = 3\n")
    with pytest.raises(ConfigError, match="max_queeu: not a setting"):
        read_config_file(config)


def test_shards_split_every_input_once_and_outputs_keep_their_names():
    keys = [f"folder/{n}.jpg" for n in range(200)]
    shares = [[k for k in keys if Shard(i, 3).takes(k)] for i in range(3)]
    assert sorted(sum(shares, [])) == sorted(keys) and all(40 < len(s) < 90 for s in shares)
    assert shares == [[k for k in reversed(keys) if Shard(i, 3).takes(k)][::-1] for i in range(3)]  # order-free
    names = output_names(["a/b.jpg", "a/b.png", "c.jpeg"], flags.request_from({"format": "webp"}))
    assert names == {"a/b.jpg": {"image": "a/b.jpg.webp"}, "a/b.png": {"image": "a/b.png.webp"},
                     "c.jpeg": {"image": "c.webp"}}
    two = output_names(["x.jpg"], flags.request_from({"effects": '["dither", "popart"]'}))
    assert two == {"x.jpg": {"dither": "x.dither.png", "popart": "x.popart.png"}}


def test_the_command_line_runs_the_pipeline_without_flask():
    code = ("import sys; import app.cli.main, app.cli.batch, app.cli.local, app.cli.remote, app.cli.storage, "
            "app.pipeline.run, app.pipeline.runtime; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


# -- bgremove remove -------------------------------------------------------------------------------


def test_remove_one_image_to_a_file_and_through_stdin_and_stdout(tmp_path):
    assert BGREMOVE.is_file(), "the bgremove script is not installed: pip install -e ."
    photo = small_photos(tmp_path, 1, side=240, nested=False)[0]
    done = bgremove("remove", str(photo))
    assert done.returncode == 0, done.stderr.decode()
    cutout = decoded(photo.with_name(f"{photo.stem}.nobg.png"))
    assert cutout.mode == "RGBA" and cutout.size == decoded(photo).size
    alpha = np.asarray(cutout.getchannel("A"))
    assert (alpha == 0).mean() > 0.1 and (alpha == 255).mean() > 0.05  # a subject, and background gone
    framed = bgremove("remove", "-", "--size", "200x200", "--padding", "10%", "--background", "#00ff00",
                      "--format", "jpeg", "--quality", "85", stdin=photo.read_bytes())
    assert framed.returncode == 0, framed.stderr.decode()
    img = decoded(framed.stdout)
    assert img.format == "JPEG" and img.size == (200, 200) and img.mode == "RGB"
    corner = np.asarray(img)[:8, :8].reshape(-1, 3).mean(axis=0)
    assert corner[1] > 200 and corner[0] < 60 and corner[2] < 60  # the green background


def test_remove_says_what_is_wrong_and_exits_by_kind(tmp_path):
    photo = small_photos(tmp_path, 1, nested=False)[0]
    bad_value = bgremove("remove", str(photo), "--quality", "500")
    with pytest.raises(BadOption) as api:
        RemoveOptions.from_form({"quality": "500"})
    assert bad_value.returncode == 2 and api.value.message in bad_value.stderr.decode()
    assert "--quality" in bad_value.stderr.decode()
    config = tmp_path / "config.toml"
    config.write_text("max_queeu = 3\n")
    misconfigured = bgremove("remove", str(photo), "--config", str(config))
    assert misconfigured.returncode == 2
    assert f"config error: {config}: max_queeu: not a setting" in misconfigured.stderr.decode()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    refused = bgremove("remove", str(corrupt))
    assert refused.returncode == 1
    assert refused.stderr.decode().strip().startswith("Error: invalid_image: file: not a readable image")
    assert not list(tmp_path.glob("corrupt.nobg*"))


def test_remove_takes_correction_strokes_as_a_mask_image(tmp_path):
    """--keep-mask/--remove-mask FILE: the API's mask image (white = painted, the upload's size). The
    impala's stroke through the ghost under its chin (tests/test_strokes.py) painted as an image makes
    the cut-out its JSON lines make, the whole ghost gone, not only the painted pixels."""
    photo = ROOT / "tests" / "data" / "quality" / "am2k" / "am2k-04.jpg"
    stroke = json.dumps({"width": 40, "lines": [[[880, 860], [900, 960], [880, 1070]]]})
    size = decoded(photo).size
    painted = rasterize(Strokes.from_text(stroke), size, size)
    mask = tmp_path / "remove.png"
    Image.fromarray(painted).convert("L").save(mask)
    plain = bgremove("remove", str(photo), "-o", str(tmp_path / "plain.png"))
    by_image = bgremove("remove", str(photo), "-o", str(tmp_path / "image.png"), "--remove-mask", str(mask))
    by_lines = bgremove("remove", str(photo), "-o", str(tmp_path / "lines.png"), "--remove-mask", stroke)
    for done in (plain, by_image, by_lines):
        assert done.returncode == 0, done.stderr.decode()
    before, after = (np.asarray(decoded(tmp_path / f"{name}.png").getchannel("A")) for name in ("plain", "image"))
    assert np.array_equal(after, np.asarray(decoded(tmp_path / "lines.png").getchannel("A")))
    ghost = (slice(900, 1060), slice(860, 980))  # under the chin: background in truth
    assert (before[ghost] > 128).mean() > 0.3 and (after[ghost] > 128).mean() < 0.05
    assert ((before > 128) & (after < 128)).sum() > 2 * painted.sum()  # the region, not only the brush

    small = tmp_path / "small.png"
    Image.fromarray(painted[::2, ::2]).convert("L").save(small)
    wrong = bgremove("remove", str(photo), "--remove-mask", str(small))
    assert wrong.returncode == 1
    assert "remove_mask: the mask image must have the upload's size" in wrong.stderr.decode()
    in_batch = bgremove("batch", str(tmp_path), str(tmp_path / "out"), "--keep-mask", str(mask))
    assert in_batch.returncode == 2 and "--keep-mask: a mask image is painted for one photo" in in_batch.stderr.decode()


# -- bgremove batch --------------------------------------------------------------------------------


def test_batch_a_folder_resumes_and_reports_failures(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    photos = small_photos(inputs, 3)
    (inputs / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (inputs / "notes.txt").write_text("not an image: not an input")
    first = bgremove("batch", str(inputs), str(out), "--format", "webp", "--shadow", "drop", "--shadow-offset",
                     "12,12", "--json")
    assert first.returncode == 1, first.stderr.decode()  # one input failed
    report = summary(first)
    assert (report["inputs"], report["done"], report["skipped"], report["failed"]) == (4, 3, 0, 1)
    assert report["failures"] == [{"input": "sub/broken.jpg", "code": "invalid_image", "message": report[
        "failures"][0]["message"]}] and report["failures"][0]["message"].startswith("file: not a readable image")
    for photo in photos:
        made = out / photo.relative_to(inputs).with_suffix(".webp")
        img = decoded(made)
        width, height = decoded(photo).size
        assert img.format == "WEBP" and img.mode == "RGBA"
        assert img.size[0] > width and img.size[1] > height  # the drop shadow grew the canvas
        assert np.asarray(img.getchannel("A")).min() == 0
    assert not (out / "notes.webp").exists() and not list(out.rglob(f"*{TEMPORARY}*"))
    records = {r["input"]: r for r in manifest_lines(out)}
    assert set(records) == {p.relative_to(inputs).as_posix() for p in photos} | {"sub/broken.jpg"}
    ok = records[photos[0].relative_to(inputs).as_posix()]
    assert ok["status"] == "done" and ok["input_hash"].startswith("sha256:") and ok["options"] == {
        "format": "webp", "shadow": "drop", "shadow_offset": "12,12"} and ok["time"] and ok["seconds"] > 0
    assert records["sub/broken.jpg"]["status"] == "failed" and records["sub/broken.jpg"]["code"] == "invalid_image"

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.webp")}
    again = bgremove("batch", str(inputs), str(out), "--format", "webp", "--shadow", "drop", "--shadow-offset",
                     "12,12", "--json")
    assert (summary(again)["done"], summary(again)["skipped"], summary(again)["failed"]) == (0, 3, 1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.webp")} == mtimes  # nothing rewritten
    deleted = out / photos[1].relative_to(inputs).with_suffix(".webp")
    deleted.unlink()
    (inputs / "sub" / "broken.jpg").unlink()
    redo = bgremove("batch", str(inputs), str(out), "--format", "webp", "--shadow", "drop", "--shadow-offset",
                    "12,12", "--json")
    assert redo.returncode == 0 and (summary(redo)["done"], summary(redo)["skipped"]) == (1, 2)
    assert decoded(deleted).format == "WEBP"
    other = bgremove("batch", str(inputs), str(out), "--format", "webp", "--json")  # other options: made anew
    assert (summary(other)["done"], summary(other)["skipped"]) == (3, 0)
    assert {r["deployment"]["edge_matting"] for r in manifest_lines(out)} == {"band"}
    unmatted = bgremove("batch", str(inputs), str(out), "--format", "webp", "--json", "-s", "EDGE_MATTING=off")
    assert (summary(unmatted)["done"], summary(unmatted)["skipped"]) == (3, 0)  # another deployment: made anew
    fp32 = bgremove("batch", str(inputs), str(out), "--format", "webp", "--json", "-s", "EDGE_MATTING=off",
                    "-s", "ONNX_PRECISION=fp32")
    assert (summary(fp32)["done"], summary(fp32)["skipped"]) == (3, 0)  # another model file
    last = manifest_lines(out)[-1]["deployment"]
    assert last["precision"] == "fp32" and last["edge_matting"] == "off" and "int8_sha256" not in last
    same = bgremove("batch", str(inputs), str(out), "--format", "webp", "--json", "-s", "EDGE_MATTING=off",
                    "-s", "ONNX_PRECISION=fp32")
    assert (summary(same)["done"], summary(same)["skipped"]) == (0, 3)


def test_ctrl_c_stops_cleanly_and_a_second_run_finishes(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    small_photos(inputs, 10, side=640, nested=False)
    proc = start("batch", str(inputs), str(out), "--progress")
    deadline = time.monotonic() + 60
    while not list(out.glob("*.png")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # as Ctrl-C does, mid-batch
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()[-2000:]
    assert "interrupted" in stdout.decode() and "run the same command again" in stdout.decode()
    assert "img/s" in stderr.decode()  # the progress bar: rate (and ETA) on stderr
    made = sorted(out.glob("*.png"))
    assert 1 <= len(made) < 10
    assert not list(out.rglob(f"*{TEMPORARY}*"))  # no partial output under any name
    for path in made:
        assert decoded(path).mode == "RGBA"
    records = manifest_lines(out)
    assert sorted(r["outputs"][0] for r in records) == [p.name for p in made]  # each written with its line
    rest = bgremove("batch", str(inputs), str(out), "--workers", "2", "--json")
    assert rest.returncode == 0, rest.stderr.decode()
    report = summary(rest)
    assert (report["skipped"], report["done"], report["failed"], report["workers"]) == (len(made), 10 - len(made), 0, 2)
    assert len(list(out.glob("*.png"))) == 10 and len(manifest_lines(out)) == 10


def test_a_worker_process_makes_the_bytes_this_process_makes(tmp_path):
    inputs = tmp_path / "in"
    small_photos(inputs, 2, nested=False)
    one = bgremove("batch", str(inputs), str(tmp_path / "one"), "--preset", "sticker", "--json")
    two = bgremove("batch", str(inputs), str(tmp_path / "two"), "--preset", "sticker", "--workers", "2", "--json")
    assert one.returncode == 0 and two.returncode == 0, two.stderr.decode()
    for path in (tmp_path / "one").glob("*.png"):
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes()
