"""``bgremove batch gs://… gs://…`` as Cloud Run Jobs runs it: tasks in separate processes sharing a
bucket (the real google-cloud-storage client against a real GCS emulator process), each taking its
share from CLOUD_RUN_TASK_INDEX/CLOUD_RUN_TASK_COUNT; a task killed halfway and run again."""

from __future__ import annotations

import json
import time

import pytest

from tests.clikit import bgremove, decoded, small_photos, start, summary
from tests.serverkit import running_emulator
from tests.test_cache_gcs import bucket_client


@pytest.fixture(scope="module")
def emulator():
    with running_emulator() as emu:
        yield emu


def upload(emulator, photos, root, prefix):
    bucket = bucket_client(emulator.host).bucket(emulator.bucket)
    for photo in photos:
        bucket.blob(prefix + photo.relative_to(root).as_posix()).upload_from_filename(str(photo))
    return bucket


def objects(bucket, prefix):
    return {blob.name[len(prefix):]: blob for blob in bucket.list_blobs(prefix=prefix)}


def test_three_tasks_make_every_object_exactly_once(emulator, tmp_path):
    photos = small_photos(tmp_path / "in", 9)
    bucket = upload(emulator, photos, tmp_path / "in", "fleet/in/")
    bucket.blob("fleet/in/README.txt").upload_from_string(b"not an image")
    env = {"STORAGE_EMULATOR_HOST": emulator.host, "CLOUD_RUN_TASK_COUNT": "3"}
    tasks = [start("batch", f"gs://{emulator.bucket}/fleet/in/", f"gs://{emulator.bucket}/fleet/out/", "--json",
                   env={**env, "CLOUD_RUN_TASK_INDEX": str(index)}) for index in range(3)]
    reports = []
    for task in tasks:
        stdout, stderr = task.communicate(timeout=120)
        assert task.returncode == 0, stderr.decode()[-2000:]
        reports.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    assert [r["task"] for r in reports] == [{"index": i, "count": 3} for i in range(3)]
    assert sum(r["done"] for r in reports) == 9 and all(r["done"] == r["inputs"] for r in reports)
    assert all(r["inputs"] >= 1 for r in reports)  # each task had a share

    made = objects(bucket, "fleet/out/")
    outputs = {name: blob for name, blob in made.items() if name.endswith(".png")}
    assert sorted(outputs) == sorted(p.relative_to(tmp_path / "in").with_suffix(".png").as_posix() for p in photos)
    manifests = sorted(name for name in made if name.startswith(".bgremove/"))
    assert manifests == [f".bgremove/manifest-task-{i:04d}.jsonl" for i in range(3)]
    inputs_seen = []
    for index, name in enumerate(manifests):
        for line in made[name].download_as_bytes().decode().splitlines():
            record = json.loads(line)
            assert record["task"] == index and record["status"] == "done"
            assert record["input_hash"].startswith("md5:")
            assert outputs[record["outputs"][0]].metadata["bgremove-key"] == record["key"]
            inputs_seen.append(record["input"])
    assert sorted(inputs_seen) == sorted(p.relative_to(tmp_path / "in").as_posix() for p in photos)  # once each
    for photo in photos[:3]:
        img = decoded(outputs[photo.relative_to(tmp_path / "in").with_suffix(".png").as_posix()].download_as_bytes())
        assert img.mode == "RGBA" and img.size == decoded(photo).size


def test_a_task_killed_halfway_and_run_again_finishes_only_the_rest(emulator, tmp_path):
    photos = small_photos(tmp_path / "in", 8, side=640, nested=False)
    bucket = upload(emulator, photos, tmp_path / "in", "retry/in/")
    env = {"STORAGE_EMULATOR_HOST": emulator.host}
    args = ("batch", f"gs://{emulator.bucket}/retry/in/", f"gs://{emulator.bucket}/retry/out/")
    task = start(*args, "--json", env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and task.poll() is None:
        if sum(name.endswith(".png") for name in objects(bucket, "retry/out/")) >= 2:
            break
        time.sleep(0.05)
    task.kill()  # as a task that fails, or whose instance is lost: no chance to save anything
    task.communicate(timeout=30)
    before = {name: blob.generation for name, blob in objects(bucket, "retry/out/").items() if name.endswith(".png")}
    assert 2 <= len(before) < 8, before

    again = bgremove(*args, "--json", env=env)  # Cloud Run's retry of the task
    assert again.returncode == 0, again.stderr.decode()
    report = summary(again)
    assert (report["skipped"], report["done"], report["failed"]) == (len(before), 8 - len(before), 0)
    after = {name: blob.generation for name, blob in objects(bucket, "retry/out/").items() if name.endswith(".png")}
    assert len(after) == 8 and all(after[name] == generation for name, generation in before.items())  # not rewritten
