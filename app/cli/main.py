"""``bgremove``: the service's background removal from the command line.

    bgremove remove IN [-o OUT] [options]         one image (``-``: stdin / stdout)
    bgremove batch IN_DIR OUT_DIR [options]       a folder, or gs://BUCKET/in/ -> gs://BUCKET/out/
    bgremove batch IN_DIR OUT_DIR --server URL    the same batch, sent to a running service

In-process, it runs the service's own pipeline (the same :class:`~app.pipeline.Job`) on the CPU
tier's model; its result options are the API's form fields (:mod:`app.cli.flags`), read and
checked by the same code. Settings are the service's (README's Configuration), from a settings
file, the environment and ``--setting NAME=VALUE``, in that order of precedence (lowest first).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from app.cli.flags import (
    BACKGROUND_FILE, SECTION, BadOption, Request, describe_error, flag, option_flags, request_from,
)
from config.settings import (
    ConfigError, Settings, default_config_path, from_layers, layered_env, read_config_file, variables,
)
from config.settings import _available_cpus as _cpus  # what INFERENCE_THREADS defaults to

# What the command line changes from the service's defaults (a settings file, the environment or
# --setting override them): no result cache (a batch resumes from its manifest instead, and a
# cache would hold a second copy of every output), no warm-up run, and the CPUs shared by workers.
CLI_DEFAULTS = {"CACHE_BACKEND": "none", "WARMUP": "false"}
# What one in-process worker holds: the model, the runtime and one photo at a time, bounded by the
# same settings as a server worker (MAX_WORK_PIXELS, MAX_DECODE_MB, MAX_ENCODE_MB). Measured
# (benchmarks/bench_batch.py, docs/benchmarks.md): about 180 MB on the fixture photos, under 300 MB
# at 12 MP. --workers auto stays within the available memory at this much a worker.
WORKER_BUDGET_MB = 300
OUTPUT_EXTENSIONS = ("png", "webp", "jpg", "jpeg", "heic", "heif", "avif", "zip")
INTERRUPTED = 130  # a shell's status for Ctrl-C

SETTINGS_SECTION = "Settings (the service's, README's Configuration)"
RUN_SECTION = "Batch"


class ConfigProblem(click.ClickException):
    """A bad setting (file, environment or --setting): bad usage, exit status 2."""

    exit_code = 2


class Command(click.Command):
    """--help in sections: each option's ``section`` (the result options, the batch's, the settings)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record:
                sections.setdefault(getattr(param, "section", "Options"), []).append(record)
        order = ["Options", RUN_SECTION, SECTION, SETTINGS_SECTION]
        for name in sorted(sections, key=lambda n: order.index(n) if n in order else len(order)):
            with formatter.section(name):
                formatter.write_dl(sections[name])


class Sectioned(click.Option):
    def __init__(self, *args: Any, section: str = "Options", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.section = section


def settings_options(command: Callable) -> Callable:
    for decorator in reversed([
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), cls=Sectioned,
                     section=SETTINGS_SECTION, metavar="FILE",
                     help="a TOML settings file: the settings' variables as keys, e.g. ONNX_PRECISION = \"fp32\" "
                          "[default: $XDG_CONFIG_HOME/bgremove/config.toml when it exists]"),
        click.option("-s", "--setting", "setting_pairs", multiple=True, cls=Sectioned, section=SETTINGS_SECTION,
                     metavar="NAME=VALUE",
                     help="one setting, over the file and the environment, e.g. -s MAX_WORK_PIXELS=4000000 "
                          "(repeatable). The command line's own defaults: CACHE_BACKEND=none, WARMUP=false, "
                          "INFERENCE_THREADS=CPUs / workers"),
        click.option("-v", "--verbose", is_flag=True, cls=Sectioned, section=SETTINGS_SECTION,
                     help="log the service's messages (info level) to stderr"),
    ]):
        command = decorator(command)
    return command


def result_options(command: Callable) -> Callable:
    command.__click_params__ = [*getattr(command, "__click_params__", []), *reversed(option_flags())]  # type: ignore[attr-defined]
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="bgremove-service", prog_name="bgremove")
def main() -> None:
    """Remove the background of photos with the service's own pipeline: one image, a folder, a
    bucket across a Cloud Run Jobs fleet, or a running service.

    Result options are the API's form fields, named --NAME for NAME (`_` written `-`): e.g.
    --format webp, --size 2000x2000, --background white, --shadow drop, --effects '["dither"]'.
    --effects makes /api/v2/process's result, --color /api/bg/change_color's, anything else
    /api/bg/remove's; values, checks and messages are the API's. `bgremove COMMAND -h` lists them.
    """


# -- settings --------------------------------------------------------------------------------


def settings_layers(config_file: Path | None, pairs: tuple[str, ...],
                    workers: int = 1) -> list[tuple[str, dict[str, str]]]:
    """Where the settings come from, lowest first: the command line's defaults, the settings file,
    the environment, ``--setting`` pairs."""
    known = set(variables())
    flags = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().upper()
        if not sep or name not in known:
            raise click.BadParameter(f"{pair!r}: expected NAME=VALUE with NAME a setting (README's Configuration), "
                                     "e.g. MAX_WORK_PIXELS=4000000", param_hint="--setting")
        flags[name] = value
    env = os.environ
    defaults = {**CLI_DEFAULTS, "INFERENCE_THREADS": str(max(1, _cpus() // max(1, workers)))}
    layers: list[tuple[str, dict[str, str]]] = [("the command line's defaults", defaults)]
    path = config_file or default_config_path(env)
    if config_file is not None or path.is_file():
        try:
            layers.append((str(path), read_config_file(path)))
        except ConfigError as exc:
            raise ConfigProblem(f"config error: {exc}") from None
    return [*layers, ("environment", dict(env)), ("--setting", flags)]


def load_settings(layers: list[tuple[str, dict[str, str]]]) -> Settings:
    try:
        return from_layers(*layers)
    except ConfigError as exc:
        raise ConfigProblem(f"config error: {exc}") from None


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="bgremove: %(levelname)s %(name)s: %(message)s")


def _request(values: dict[str, Any], implied: dict[str, str] | None = None) -> Request:
    try:
        return request_from(values, values.get(BACKGROUND_FILE), implied)
    except BadOption as exc:
        if implied and exc.field in implied and values.get(exc.field) is None:
            raise click.UsageError(f"{exc.message} (taken from the output's extension; give --{exc.field})") from None
        raise click.UsageError(describe_error(exc)) from None


def _malloc_policy(settings: Settings) -> None:
    """The lean memory mode's malloc tunables, as the server runs with (this process restarts itself
    once with them, before any work)."""
    from app.ops import tuning

    tuning.exec_with_malloc_tunables(settings)


# -- bgremove remove -----------------------------------------------------------------------------


@main.command(cls=Command)
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", "output", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True),
              help="where to write the result; '-' for stdout [default: IN's name + .nobg + the format's extension, "
                   "beside it; stdout when IN is '-']. Its extension sets the format when --format is not given. "
                   "With several effects: OUT's name + .EFFECT for each")
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON on stdout")
@result_options
@settings_options
def remove(input_path: str, output: str | None, as_json: bool, config_file: Path | None,
           setting_pairs: tuple[str, ...], verbose: bool, **values: Any) -> None:
    """One image, in this process, on the CPU tier's model.

    IN is an image file (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF) or '-' for stdin.
    Exit status: 0 written, 1 the image was refused (the API's error code and message), 2 bad usage.

    \b
    Examples:
      bgremove remove cat.jpg                               # cat.nobg.png
      bgremove remove cat.jpg -o cat.webp --preset square-white
      bgremove remove - < cat.jpg > cut.png
      bgremove remove cat.jpg -o art.png --effects '["popart"]'
      bgremove remove llama.jpg --keep-mask ears.png       # white where the llama must stay
    """
    _logging(verbose)
    implied = {}
    if output not in (None, "-") and values.get("format") is None:
        extension = Path(output).suffix.lower().lstrip(".")
        if extension in OUTPUT_EXTENSIONS:
            implied["format"] = extension
    request = _request(values, implied)
    settings = load_settings(settings_layers(config_file, setting_pairs))
    if output is None and input_path == "-":
        output = "-"
    to_stdout = output == "-"
    names = _image_names(request)
    if to_stdout and len(names) > 1:
        raise click.UsageError(f"{len(names)} effects make {len(names)} images: give -o FILE (each is written as "
                               "FILE's name + .EFFECT)")
    if to_stdout and sys.stdout.isatty() and not as_json:
        raise click.UsageError("the image would be written to the terminal: redirect stdout, or give -o FILE")
    _malloc_policy(settings)
    data = sys.stdin.buffer.read() if input_path == "-" else _read(input_path)

    from app.cli.local import Engine

    outcome = _loading(Engine, settings, request.options, request.background, request.masks).process(data)
    if not outcome.ok:
        raise click.ClickException(f"{outcome.code}: {outcome.message}")
    assert outcome.images is not None
    written = []
    if to_stdout:
        sys.stdout.buffer.write(next(iter(outcome.images.values())))
        sys.stdout.buffer.flush()
        written.append("-")
    else:
        from app.cli.storage import LocalStorage

        for name, target in _targets(input_path, output, request, names).items():
            LocalStorage(target.parent).write(target.name, outcome.images[name])
            written.append(str(target))
    scaled = None if outcome.scaled_from is None else "{}x{}".format(*outcome.scaled_from)
    report = {"input": input_path, "outputs": written, "width": outcome.width, "height": outcome.height,
              "scaled_from": scaled, "format": request.options.format, "seconds": round(outcome.seconds, 3)}
    if as_json:
        click.echo(json.dumps(report), err=to_stdout)
    elif not to_stdout:
        note = f" (worked from {scaled}: MAX_WORK_PIXELS, MAX_ENCODE_MB or --max-megapixels)" if scaled else ""
        click.echo(f"{', '.join(written)}: {outcome.width}x{outcome.height} {request.options.format}{note}, "
                   f"{outcome.seconds:.2f} s")


def _loading(build: Callable[..., Any], *args: Any) -> Any:
    """``build(*args)``, a model that cannot load (a missing int8 build, a bad MODEL_PATH) said as the
    service's boot says it, without a traceback."""
    from adapters.base import ModelLoadError

    try:
        return build(*args)
    except ModelLoadError as exc:
        raise ConfigProblem(f"model error: {exc}") from None


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror or exc}", param_hint="IN") from None


def _image_names(request: Request) -> list[str]:
    effects = list(getattr(request.options, "effect_params", {}) or {})
    return effects or ["image"]


def _targets(input_path: str, output: str | None, request: Request, names: list[str]) -> dict[str, Path]:
    from app.pipeline.imaging import OUTPUT_FORMATS

    extension = OUTPUT_FORMATS[request.options.format][2]
    if output is None:
        source = Path(input_path if input_path != "-" else "image")
        target = source.with_name(f"{source.stem}.nobg.{extension}")
    else:
        target = Path(output)
    if len(names) == 1:
        return {names[0]: target}
    return {name: target.with_name(f"{target.stem}.{name}{target.suffix or '.' + extension}") for name in names}


# -- bgremove batch ------------------------------------------------------------------------------


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        workers = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: a number of processes, or auto") from None
    if not 1 <= workers <= 64:
        raise click.BadParameter(f"{value!r}: 1 to 64 processes")
    return workers


@main.command(cls=Command)
@click.argument("source", metavar="IN_DIR")
@click.argument("destination", metavar="OUT_DIR")
@click.option("-w", "--workers", default="1", cls=Sectioned, section=RUN_SECTION, metavar="N|auto",
              help=f"processes, each with its own model, one image at a time; each holds about {WORKER_BUDGET_MB} MB "
                   "at most (the 512 MB tier's bounds: MAX_WORK_PIXELS, MAX_DECODE_MB, MAX_ENCODE_MB). auto: one per "
                   f"CPU, at most available memory / {WORKER_BUDGET_MB} MB [default: 1]")
@click.option("--server", metavar="URL", cls=Sectioned, section=RUN_SECTION,
              help="send each image to a running service (one instance, or many behind a load balancer) instead "
                   "of processing it here")
@click.option("--api-key", metavar="KEY", envvar="BGREMOVE_API_KEY", cls=Sectioned, section=RUN_SECTION,
              help="--server: the service's API key (X-API-Key) [env: BGREMOVE_API_KEY]")
@click.option("--concurrency", default=4, type=click.IntRange(1, 256), cls=Sectioned, section=RUN_SECTION,
              metavar="N", help="--server: requests at once [default: 4]")
@click.option("--retries", default=5, type=click.IntRange(0, 100), cls=Sectioned, section=RUN_SECTION, metavar="N",
              help="--server: retries of an image after a network error (503/429 answers are waited out, after "
                   "their Retry-After with jitter, up to --max-wait) [default: 5]")
@click.option("--max-wait", default=600.0, type=click.FloatRange(0, 86400), cls=Sectioned, section=RUN_SECTION,
              metavar="SECONDS", help="--server: the longest an image waits out 503/429 answers [default: 600]")
@click.option("--task-index", default=0, type=click.IntRange(0), envvar="CLOUD_RUN_TASK_INDEX", cls=Sectioned,
              section=RUN_SECTION, metavar="I",
              help="this task's share: the inputs whose name hashes to I modulo --task-count "
                   "[env: CLOUD_RUN_TASK_INDEX; default: 0]")
@click.option("--task-count", default=1, type=click.IntRange(1), envvar="CLOUD_RUN_TASK_COUNT", cls=Sectioned,
              section=RUN_SECTION, metavar="N", help="tasks sharing the batch [env: CLOUD_RUN_TASK_COUNT; default: 1]")
@click.option("--progress/--no-progress", default=None, cls=Sectioned, section=RUN_SECTION,
              help="the progress bar on stderr [default: when stderr is a terminal]")
@click.option("--json", "as_json", is_flag=True, cls=Sectioned, section=RUN_SECTION,
              help="print the summary as JSON on stdout")
@result_options
@settings_options
def batch(source: str, destination: str, workers: str, server: str | None, api_key: str | None, concurrency: int,
          retries: int, max_wait: float, task_index: int, task_count: int, progress: bool | None, as_json: bool,
          config_file: Path | None, setting_pairs: tuple[str, ...], verbose: bool, **values: Any) -> None:
    """Every image under IN_DIR into OUT_DIR, the folders kept; local folders or gs://BUCKET/PREFIX/.

    \b
    Each output is the input's path with the format's extension (a/b.jpg -> a/b.png).
    Resumable: an input whose output exists for the same input hash and options is
    skipped; OUT_DIR/.bgremove/manifest.jsonl records each input's hash, options,
    status and time. Ctrl-C stops at once and leaves no partial file: run again to
    finish. Failed images are listed at the end.
    Exit status: 0 all done, 1 some images failed, 2 bad usage, 130 interrupted.

    \b
    Examples:
      bgremove batch photos/ cutouts/ --workers 2
      bgremove batch photos/ listing/ --preset square-white --format jpeg
      bgremove batch photos/ cutouts/ --server http://localhost:5000 --concurrency 8
      bgremove batch gs://shop/in/ gs://shop/out/     # a Cloud Run Job's task
    """
    _logging(verbose)
    workers_n = _workers(workers)
    if task_index >= task_count:
        raise click.BadParameter(f"task {task_index} of {task_count}: the index must be less than the count",
                                 param_hint="--task-index")
    ctx = click.get_current_context()
    given = [name for name in ("api_key", "concurrency", "retries", "max_wait")
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if server is None and given:
        raise click.UsageError(f"--{given[0].replace('_', '-')} is for --server")
    if server is not None and workers != "1":
        raise click.UsageError("--workers is for in-process batches; with --server, --concurrency sets requests at once")
    request = _request(values)
    if request.masks:
        name = next(iter(request.masks))
        raise click.UsageError(f"{flag(name)}: a mask image is painted for one photo; give it to bgremove remove "
                               "(a batch takes strokes as JSON lines, the same for every photo)")
    if server is None:  # the settings first: this process may restart itself once with the malloc policy
        n = _auto_workers() if workers_n == "auto" else int(workers_n)
        layers = settings_layers(config_file, setting_pairs, n)
        settings = load_settings(layers)
        _malloc_policy(settings)
        _check_memory(n)

    from app.cli.batch import Batch, InlineRunner, PoolRunner, Shard, ThreadRunner
    from app.cli.storage import LocalStorage, open_storage

    if not source.startswith("gs://") and not Path(source).is_dir():
        raise click.BadParameter(f"{source}: not a folder", param_hint="IN_DIR")
    try:
        source_store = open_storage(source)
        destination_store = open_storage(destination, create=True)
    except ImportError:
        raise click.ClickException("gs:// locations need the gcs extra: pip install '.[gcs]'") from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{destination}: {exc}") from None
    skip = None
    if isinstance(destination_store, LocalStorage) and isinstance(source_store, LocalStorage):
        skip = destination_store.root  # an OUT_DIR inside IN_DIR is never read as input
        destination_store.remove_stale_temporaries()
    elif destination.startswith("gs://"):
        skip = destination_store.url
    remote = None
    if server is not None:
        from app.cli.remote import Remote

        remote = Remote(server, request, api_key=api_key, concurrency=concurrency, retries=retries,
                        max_wait_s=max_wait)
        try:
            remote.check()
        except ConnectionError as exc:
            raise click.ClickException(str(exc)) from None
        deployment = remote.deployment()
    else:
        from app.cli.local import deployment as local_deployment

        deployment = _loading(local_deployment, settings)
    job = Batch(source_store, destination_store, request, Shard(task_index, task_count), skip=skip,
                deployment=deployment)
    if remote is not None:
        runner = ThreadRunner(concurrency, remote.process, remote.stop)
        job.summary.mode, job.summary.workers = f"server {server}", concurrency
    else:
        if n == 1:
            from app.cli.local import Engine

            runner = InlineRunner(_loading(Engine, settings, request.options, request.background).process)
        else:
            from app.cli import local

            env = layered_env(*layers)[0]  # the workers read the settings checked here
            runner = PoolRunner(n, local.init_worker, (env, request.result.name, request.form, request.background),
                                local.work)
        job.summary.workers = n
    show = progress if progress is not None else sys.stderr.isatty()
    try:
        summary = job.run(runner, _Bar() if show else None)
    except OSError as exc:  # writing an output or the manifest: a full disk, a folder without permission
        raise click.ClickException(f"cannot write to {destination}: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("google."):  # the bucket: missing, no permission, unreachable
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        raise
    if remote is not None:
        summary.retries = {"shed": remote.counts.shed, "network": remote.counts.network}
    if as_json:
        click.echo(json.dumps(summary.as_json()))
    else:
        _print_summary(summary)
    if summary.interrupted:
        sys.exit(INTERRUPTED)
    sys.exit(1 if summary.failed else 0)


def _auto_workers() -> int:
    import psutil

    by_memory = int(psutil.virtual_memory().available / 2**20 // WORKER_BUDGET_MB)
    return max(1, min(_cpus(), by_memory))


def _check_memory(workers: int) -> None:
    import psutil

    available = psutil.virtual_memory().available / 2**20
    if workers * WORKER_BUDGET_MB > available:
        click.echo(f"bgremove: warning: {workers} workers may need {workers * WORKER_BUDGET_MB} MB; "
                   f"{available:.0f} MB is available", err=True)


class _Bar:
    """tqdm's bar on stderr: done/total, rate, elapsed and ETA; failures as they come."""

    def start(self, total: int, skipped: int) -> None:
        from tqdm import tqdm

        desc = f"bgremove ({skipped} done before)" if skipped else "bgremove"
        self.bar = tqdm(total=total, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True,
                        smoothing=0.1, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                   "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        self.failed = 0

    def advance(self, failed: int) -> None:
        if failed != self.failed:
            self.failed = failed
            self.bar.set_postfix_str(f"{failed} failed", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if hasattr(self, "bar"):
            self.bar.close()


def _print_summary(summary: Any) -> None:
    echo = click.echo
    state = "interrupted" if summary.interrupted else "stopped" if summary.stopped else "done"
    rate = f", {summary.images_per_s:.2f} images/s" if summary.done else ""
    task = f" (task {summary.task['index']} of {summary.task['count']})" if summary.task["count"] > 1 else ""
    echo(f"{state}{task}: {summary.done} made, {summary.skipped} already done, {summary.failed} failed"
         f"{f', {summary.remaining} left' if summary.remaining else ''} of {summary.inputs} images "
         f"in {summary.seconds:.1f} s{rate}")
    if summary.retries.get("shed") or summary.retries.get("network"):
        echo(f"retried: {summary.retries['shed']} busy answers (503/429) waited out, "
             f"{summary.retries['network']} network errors")
    if summary.failures:
        echo("failed:")
        for failure in summary.failures:
            echo(f"  {failure.input}: {failure.code}: {failure.message}")
    if summary.stopped:
        echo(f"stopped: {summary.stopped}")
    if summary.interrupted or summary.stopped:
        echo("run the same command again to finish: what is done is kept")
    echo(f"manifest: {summary.manifest}")
