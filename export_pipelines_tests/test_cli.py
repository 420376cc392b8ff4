"""The command line as a newcomer meets it: from any folder, with names, sentences, pipes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export_pipelines.source import directory
from export_pipelines.source.database import SourceDatabase

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "export_pipelines.cli"]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORT_", "DAGSTER_"))}
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path, demo_sqlite_template) -> Path:
    """A project folder (its pyproject names the code location) with the demo database."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dagster]\nmodule_name = "export_pipelines.definitions"\n'
    )
    (tmp_path / "data").mkdir()
    shutil.copy(demo_sqlite_template, tmp_path / "data" / "source.db")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    return tmp_path


def test_the_cli_finds_its_project_from_a_subfolder_and_says_what_it_uses(project):
    result = run(["config"], project / "deep" / "er")
    assert result.returncode == 0, result.stderr
    assert f"project          {project}" in result.stdout
    assert f"sqlite:///{project / 'data' / 'source.db'}" in result.stdout
    assert f"store            {project / 'exports'}" in result.stdout
    # The demo's partitions start with its data, not on a fixed day months before it.
    db = SourceDatabase(f"sqlite:///{project / 'data' / 'source.db'}")
    first = db.scalar("SELECT min(created_at) FROM scan_results")[:10]
    assert f"partitions from  {first}" in result.stdout


def test_status_elsewhere_never_creates_a_database_and_says_how_to_get_one(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dagster]\nmodule_name = "export_pipelines.definitions"\n'
    )
    result = run(["status", "0b6c0c4e-0000-0000-0000-000000000000"], tmp_path)
    assert result.returncode == 1
    assert "there is no database at" in result.stderr
    assert "export-pipelines seed" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_status_of_an_unknown_request_names_the_database_it_looked_in(project):
    result = run(["status", "no-such-request"], project)
    assert result.returncode == 1
    assert "no export request no-such-request in sqlite:///" in result.stderr
    assert str(project / "data" / "source.db") in result.stderr


def test_orgs_users_and_subscriptions_list_names_beside_ids(project):
    db = SourceDatabase(f"sqlite:///{project / 'data' / 'source.db'}")
    orgs = run(["orgs"], project)
    assert orgs.returncode == 0, orgs.stderr
    for org in directory.organizations(db):
        assert any(org["id"] in line and org["name"] in line for line in orgs.stdout.splitlines())
    one = directory.organizations(db)[0]
    users = run(["users", "--org", one["id"]], project)
    expected = directory.users(db, one["id"])
    assert len(users.stdout.splitlines()) == 1 + len(expected)  # a header, then one per user
    assert all(u["email"] in users.stdout for u in expected)
    others = [u for u in directory.users(db) if u["organization"] != one["name"]]
    assert others and not any(u["email"] in users.stdout for u in others)
    subscriptions = run(["subscriptions"], project)
    assert subscriptions.returncode == 0, subscriptions.stderr
    assert all(s["id"] in subscriptions.stdout for s in directory.subscriptions(db))


def _member(db: SourceDatabase) -> tuple[str, str]:
    user = db.fetch_rows("SELECT id, organization_id FROM users ORDER BY id LIMIT 1")[0]
    return user["organization_id"], user["id"]


@pytest.mark.parametrize(
    ("extra", "sentence"),
    [
        (["--type", "scan_resutls"], "unknown export type 'scan_resutls'"),
        (
            ["--type", "scan_results", "--date-from", "2999-01-01", "--date-to", "2999-01-02"],
            "is in the future",
        ),
        (["--type", "scan_results", "--format", "DOCX"], "DOCX"),
    ],
)
def test_request_refuses_up_front_with_the_sensors_sentence_and_inserts_nothing(
    project, extra, sentence
):
    db = SourceDatabase(f"sqlite:///{project / 'data' / 'source.db'}")
    org, user = _member(db)
    before = db.scalar("SELECT count(*) FROM export_requests")
    result = run(["request", "--org", org, "--user", user, *extra], project)
    assert result.returncode == 1
    assert result.stderr.startswith("export-pipelines: not requested: ")
    assert sentence in result.stderr
    assert "Traceback" not in result.stderr
    assert db.scalar("SELECT count(*) FROM export_requests") == before


def test_an_accepted_request_prints_its_id_and_the_next_step(project):
    db = SourceDatabase(f"sqlite:///{project / 'data' / 'source.db'}")
    org, user = _member(db)
    day = db.scalar("SELECT min(created_at) FROM scan_results")[:10]
    result = run(
        [
            "request",
            "--org",
            org,
            "--user",
            user,
            "--type",
            "scan_results",
            "--date-from",
            day,
            "--date-to",
            day,
        ],
        project,
    )
    assert result.returncode == 0, result.stderr
    request_id = result.stdout.strip()
    row = db.fetch_rows("SELECT status FROM export_requests WHERE id = :id", {"id": request_id})
    assert row == [{"status": "PENDING"}]
    assert f"export-pipelines status {request_id}" in result.stderr


def test_output_piped_into_head_ends_quietly(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dagster]\nmodule_name = "export_pipelines.definitions"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORT_", "DAGSTER_"))}
    seed = subprocess.run(
        [*CLI, "seed", "--organizations", "800", "--days", "1", "--events-per-day", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert seed.returncode == 0, seed.stderr
    # ~4,800 users: far more than a pipe holds, so the writer meets the closed pipe.
    listing = subprocess.Popen(
        [*CLI, "users"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = listing.stdout.readline()
    listing.stdout.close()
    _, errors = listing.communicate(timeout=120)
    assert first.startswith(b"ID ")
    assert b"Traceback" not in errors and b"BrokenPipe" not in errors, errors.decode()
    assert listing.returncode == 0
