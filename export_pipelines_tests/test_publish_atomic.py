"""A publish is all or nothing for `verify`: whether it fails, is refused or is killed."""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from export_pipelines import store as store_module
from export_pipelines.manifest import MANIFEST, publish_folder, read_manifest, verify_folder
from export_pipelines.manifest import verify_tree as verify_store
from export_pipelines.render import RenderedFile
from export_pipelines.store import LocalStore, S3Store, Store

from .s3_server import moto_s3_server

REPO = Path(__file__).resolve().parents[1]
BUCKET = "export-pipelines-publish-test"
ORG, DAY = "org-7f3a", "2026-03-01"
FOLDER = f"scan_results/org={ORG}/date={DAY}"
STEM = f"scan_results_{ORG}_{DAY}"


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_client() -> Iterator[Any]:
    """A moto S3 server on loopback, with a client configured explicitly (no environment)."""
    import boto3

    with moto_s3_server() as endpoint:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        yield client


def open_kind(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "s3":
        client = request.getfixturevalue("s3_client")
        return S3Store(f"s3://{BUCKET}/exports-{uuid.uuid4().hex[:12]}", client)
    if kind == "local-two-renames":
        # A platform without renameat2(RENAME_EXCHANGE): the fallback swap.
        request.getfixturevalue("monkeypatch").setattr(store_module, "_renameat2", None)
    return LocalStore(tmp_path / "store")


def make_version(
    directory: Path, tag: str, extensions: tuple[str, ...] = ("csv", "json", "xml"), size=4096
) -> list[RenderedFile]:
    """Rendered files whose bytes differ from every other tag's."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for number, extension in enumerate(extensions):
        path = directory / f"{STEM}.{extension}"
        path.write_bytes(random.Random(f"{tag}-{extension}").randbytes(size + number))
        files.append(RenderedFile(path, extension.upper(), rows=10 + number))
    return files


def header(tag: str) -> dict[str, Any]:
    return {"export_type": "scan_results", "organization_id": ORG, "date": DAY, "run_id": tag}


def publish(store: Store, files: list[RenderedFile], tag: str, folder: str = FOLDER):
    return publish_folder(store, folder, files, header(tag))


def visible(store: Store, folder: str = FOLDER) -> dict[str, bytes]:
    """The folder's own files as a reader lists them (sub-folders left out)."""
    return {
        key[len(folder) + 1 :]: store.read_bytes(key)
        for key in store.list_keys(folder)
        if "/" not in key[len(folder) + 1 :]
    }


def assert_one_whole_version(store: Store, versions: dict[str, list[RenderedFile]]) -> str:
    """The folder verifies and is exactly one of `versions`: its files, nothing else."""
    assert verify_folder(store, FOLDER) == []
    assert verify_store(store) == (1, [])
    manifest = read_manifest(store, FOLDER)
    tag = manifest["run_id"]
    expected = {f.path.name: f.path.read_bytes() for f in versions[tag]}
    found = visible(store)
    assert json.loads(found.pop(MANIFEST)) == manifest
    assert found == expected
    assert [entry["name"] for entry in manifest["files"]] == list(expected)
    assert "publishing" not in manifest
    return tag


def hidden_entries(store: LocalStore, folder: str = FOLDER) -> list[str]:
    parent = (store.root / folder).parent
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def failing_at(store: Store, monkeypatch: pytest.MonkeyPatch, step: int, error: Exception):
    """Make the store's `step`-th write (put_file, put_bytes, delete or swap) raise `error`."""
    calls = 0

    def counted(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == step:
                raise error
            return original(*args, **kwargs)

        return wrapper

    for name in ("put_file", "put_bytes", "delete"):
        monkeypatch.setattr(store, name, counted(getattr(store, name)))
    if hasattr(store_module, "_swap_in"):  # the local store's swap of the whole folder
        monkeypatch.setattr(store_module, "_swap_in", counted(store_module._swap_in))


# --- (a), (c), (d): an error part-way ------------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "local-two-renames", "s3"])
@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), PermissionError(13, "Permission denied")],
    ids=["disk-full", "read-only"],
)
def test_a_failing_second_file_leaves_the_old_version_verifying(kind, error, tmp_path, request):
    store = open_kind(kind, tmp_path, request)
    old = make_version(tmp_path / "old", "old")
    new = make_version(tmp_path / "new", "new")
    publish(store, old, "old")
    before = visible(store)

    with pytest.MonkeyPatch.context() as patch:
        calls = {"n": 0}
        put_file = store.put_file

        def second_put_fails(source: Path, key: str, sha256: str) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise error  # a full disk, or the folder turned read-only between two files
            put_file(source, key, sha256)

        patch.setattr(store, "put_file", second_put_fails)
        with pytest.raises(OSError) as raised:
            publish(store, new, "new")
    assert raised.value is error

    assert verify_folder(store, FOLDER) == []
    assert verify_store(store) == (1, [])
    if kind == "s3":
        # S3 cannot swap a group of objects: the manifest withdrew the files being
        # replaced instead of vouching for bytes that are no longer there.
        manifest = read_manifest(store, FOLDER)
        assert manifest["run_id"] == "old"
        assert manifest["files"] == []
        assert manifest["publishing"]["files"] == sorted(f.path.name for f in new)
    else:
        assert visible(store) == before
        assert assert_one_whole_version(store, {"old": old}) == "old"
        assert hidden_entries(store) == []  # the failed build was removed

    publish(store, new, "new")
    assert assert_one_whole_version(store, {"new": new}) == "new"
    if isinstance(store, LocalStore):
        assert hidden_entries(store) == []


@pytest.mark.parametrize("kind", ["local", "local-two-renames", "s3"])
def test_a_failure_at_any_step_leaves_a_folder_that_verifies(kind, tmp_path, request):
    """Fail the 1st, 2nd, … write of a publish (files, manifest, swap, clean-up) in turn."""
    store = open_kind(kind, tmp_path, request)
    old = make_version(tmp_path / "old", "old", ("csv", "json", "xml"))
    # Changes one file, keeps one byte-identical, drops one, adds one.
    new = make_version(tmp_path / "new", "new", ("csv", "parquet"))
    shutil.copyfile(old[1].path, tmp_path / "new" / old[1].path.name)
    new.insert(1, RenderedFile(tmp_path / "new" / old[1].path.name, "JSON", rows=11))
    versions = {"old": old, "new": new}

    step = 0
    while True:
        step += 1
        store = open_kind(kind, tmp_path / f"step-{step}", request)
        publish(store, old, "old")
        with pytest.MonkeyPatch.context() as patch:
            failing_at(store, patch, step, PermissionError(13, "Permission denied"))
            try:
                publish(store, new, "new")
            except PermissionError:
                failed = True
            else:
                failed = False
        assert verify_folder(store, FOLDER) == [], f"after failing write {step}"
        assert verify_store(store) == (1, []), f"after failing write {step}"
        if kind != "s3":
            # Exactly one whole version: the old one whatever failed (nothing is written
            # after the swap), the new one once nothing did.
            assert assert_one_whole_version(store, versions) == ("old" if failed else "new")
            assert hidden_entries(store) == []
        # A later publish always succeeds and leaves exactly the new version.
        publish(store, new, "new")
        assert assert_one_whole_version(store, versions) == "new"
        if isinstance(store, LocalStore):
            assert hidden_entries(store) == []
        if not failed:
            break
    assert step > 3


def test_an_immutable_folder_refuses_the_publish_and_keeps_the_old_version(tmp_path):
    """A real read-only folder (`chattr +i` stops root too) appearing between two files."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", probe]).returncode:
        pytest.skip("chattr +i is not available here")
    subprocess.run(["chattr", "-i", probe], check=True)

    store = LocalStore(tmp_path / "store")
    old = make_version(tmp_path / "old", "old")
    new = make_version(tmp_path / "new", "new")
    publish(store, old, "old")
    live = store.root / FOLDER
    put_file = store.put_file
    calls = {"n": 0}

    def freeze_after_first(source: Path, key: str, sha256: str) -> None:
        put_file(source, key, sha256)
        calls["n"] += 1
        if calls["n"] == 1:
            subprocess.run(["chattr", "+i", live], check=True)

    store.put_file = freeze_after_first  # type: ignore[method-assign]
    try:
        with pytest.raises(PermissionError):
            publish(store, new, "new")
        assert assert_one_whole_version(store, {"old": old}) == "old"
        assert hidden_entries(store) == []
    finally:
        subprocess.run(["chattr", "-i", live], check=True)
    del store.put_file
    publish(store, new, "new")
    assert assert_one_whole_version(store, {"new": new}) == "new"


# --- (b): killed at random points ----------------------------------------------------------

PUBLISHER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from export_pipelines.manifest import publish_folder
    from export_pipelines.render import RenderedFile
    from export_pipelines.store import LocalStore

    root, folder, versions = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    pause = float(sys.argv[4])
    store = LocalStore(root)
    print("ready", flush=True)
    import time
    while True:
        for tag, files in versions.items():
            rendered = [RenderedFile(Path(p), fmt, rows) for p, fmt, rows in files]
            publish_folder(store, folder, rendered, {"run_id": tag})
            print("published", tag, flush=True)
            time.sleep(pause)
    """
)


def start_publisher(root: Path, versions: dict[str, list[RenderedFile]], pause: float = 0.0):
    """A separate process publishing the versions in turn, forever."""
    described = {
        tag: [[str(f.path), f.format_name, f.rows] for f in files]
        for tag, files in versions.items()
    }
    process = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(root), FOLDER, json.dumps(described), str(pause)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_sigkill_at_random_points_never_leaves_a_folder_that_fails_verify(tmp_path):
    store = LocalStore(tmp_path / "store")
    size = 3 << 20  # large enough that a kill lands inside copies, fsyncs and clean-ups
    versions = {
        tag: make_version(tmp_path / tag, tag, ("csv", "json", "xml", "parquet"), size)
        for tag in ("v1", "v2")
    }
    publish(store, versions["v1"], "v1")
    rng = random.Random(20260301)
    seen_leftovers = 0
    for _ in range(30):
        process = start_publisher(store.root, versions)
        time.sleep(rng.uniform(0.0, 0.25))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL

        assert_one_whole_version(store, versions)  # verify_folder and verify_tree included
        seen_leftovers += bool(hidden_entries(store))

    publish(store, versions["v2"], "v2")
    assert assert_one_whole_version(store, versions) == "v2"
    assert hidden_entries(store) == []  # the final publish removed every dead leftover
    assert seen_leftovers > 0  # some kills did land mid-publish


def test_verify_while_another_process_publishes_sees_one_whole_version(tmp_path):
    """`verify` at any instant, racing real publishes in another process."""
    store = LocalStore(tmp_path / "store")
    versions = {
        tag: make_version(tmp_path / tag, tag, ("csv", "json", "xml", "parquet"), 1 << 20)
        for tag in ("v1", "v2")
    }
    publish(store, versions["v1"], "v1")
    process = start_publisher(store.root, versions, pause=0.02)
    try:
        deadline = time.monotonic() + 3
        checks = 0
        while time.monotonic() < deadline:
            assert verify_folder(store, FOLDER) == []
            assert verify_store(store) == (1, [])
            checks += 1
    finally:
        process.kill()
        process.communicate()
    assert checks > 10


def test_verify_while_a_thread_publishes_to_s3_never_finds_a_problem(tmp_path, request):
    store = open_kind("s3", tmp_path, request)
    versions = {tag: make_version(tmp_path / tag, tag) for tag in ("v1", "v2")}
    publish(store, versions["v1"], "v1")
    stop = threading.Event()
    errors: list[BaseException] = []

    def publish_in_turn() -> None:
        try:
            while not stop.is_set():
                for tag, files in versions.items():
                    publish(store, files, tag)
        except BaseException as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=publish_in_turn)
    thread.start()
    try:
        deadline = time.monotonic() + 2
        checks = 0
        while time.monotonic() < deadline:
            assert verify_folder(store, FOLDER) == []
            checks += 1
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert checks > 5
    assert_one_whole_version(store, versions)


# --- leftovers, layout, sub-folders --------------------------------------------------------


def test_verify_tree_and_listing_ignore_leftovers_and_the_next_publish_removes_them(tmp_path):
    store = LocalStore(tmp_path / "store")
    old = make_version(tmp_path / "old", "old")
    new = make_version(tmp_path / "new", "new")
    publish(store, old, "old")
    parent = (store.root / FOLDER).parent
    name = (store.root / FOLDER).name

    # What killed publishes leave: a half build, an old version on its way out (with a
    # now-wrong file), a parked one from the fallback swap, and lock files nobody holds.
    dead, parked = uuid.uuid4().hex, uuid.uuid4().hex
    shutil.copytree(store.root / FOLDER, parent / f".publish-{name}.{dead}")
    (parent / f".publish-{name}.{dead}" / old[0].path.name).write_bytes(b"torn")
    (parent / f".publish-{name}.{dead}.lock").touch()
    shutil.copytree(store.root / FOLDER, parent / f".publish-{name}.{parked}.old")
    (parent / f".publish-{name}.{parked}.old" / MANIFEST).write_text("{not json")
    (parent / f".publish-{name}.{uuid.uuid4().hex}.lock").touch()
    # A publish still running in this process: its lock is held, its build must stay.
    running = uuid.uuid4().hex
    (parent / f".publish-{name}.{running}").mkdir()
    (parent / f".publish-{name}.{running}" / MANIFEST).write_text("{}")
    held = os.open(parent / f".publish-{name}.{running}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    # Another folder's leftovers are not this publish's to judge.
    other = f".publish-date=2026-03-02.{uuid.uuid4().hex}"
    (parent / other).mkdir()

    assert verify_store(store) == (1, [])
    assert verify_folder(store, FOLDER) == []
    assert all("/." not in key for key in store.list_keys(""))
    assert sorted(store.list_keys(FOLDER)) == sorted(
        [f"{FOLDER}/{f.path.name}" for f in old] + [f"{FOLDER}/{MANIFEST}"]
    )

    try:
        publish(store, new, "new")
        assert assert_one_whole_version(store, {"new": new}) == "new"
        assert hidden_entries(store) == sorted(
            [other, f".publish-{name}.{running}", f".publish-{name}.{running}.lock"]
        )
    finally:
        os.close(held)
    publish(store, old, "old")
    assert hidden_entries(store) == [other]
    assert assert_one_whole_version(store, {"old": old}) == "old"


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_the_published_layout_is_unchanged(kind, tmp_path, request):
    store = open_kind(kind, tmp_path, request)
    files = make_version(tmp_path / "v", "v")
    manifest, published = publish(store, files, "v")

    assert store.list_keys("") == sorted(
        [f"{FOLDER}/{f.path.name}" for f in files] + [f"{FOLDER}/{MANIFEST}"]
    )
    assert read_manifest(store, FOLDER) == manifest
    assert set(manifest) == {"export_type", "organization_id", "date", "run_id"} | {
        "files",
        "generated_at",
    }
    assert [p.location for p in published] == [
        store.location(f"{FOLDER}/{f.path.name}") for f in files
    ]
    if isinstance(store, LocalStore):
        assert published[0].location == str(store.root / FOLDER / files[0].path.name)
        assert hidden_entries(store) == []


@pytest.mark.parametrize("kind", ["local", "local-two-renames", "s3"])
def test_republishing_a_folder_keeps_its_sub_folders(kind, tmp_path, request):
    """`…/date=…/` and `…/date=…/user=…/` are both published folders (GDPR exports)."""
    store = open_kind(kind, tmp_path, request)
    nested = f"{FOLDER}/user=u-1"
    publish(store, make_version(tmp_path / "n", "n"), "n", folder=nested)
    publish(store, make_version(tmp_path / "a", "a"), "a")
    inner = visible(store, nested)

    publish(store, make_version(tmp_path / "b", "b", ("csv",)), "b")

    assert visible(store, nested) == inner
    assert verify_store(store) == (2, [])
    assert sorted(visible(store)) == sorted([f"{STEM}.csv", MANIFEST])
