"""Secrets stay secret: no password reaches the UI, run config, snapshots or event logs.

The end-to-end test loads the code location as `dagster dev` does (a gRPC code server,
run workers in their own processes) with EXPORT_SOURCE_URL holding a password, serves a
request through the sensor, materializes assets and delivers a report over SMTP with a
login, and then searches everything Dagster stored or shows for the secrets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from export_pipelines import settings
from export_pipelines.defs.resources import SourceResource, StoreResource, default_resources
from export_pipelines.settings import SmtpSettings
from export_pipelines.source.database import SourceDatabase, redact_secrets, redact_url

from .conftest import DEMO_DAY, scratch_postgres_database, seed
from .dev_server import ROOT, free_port

PASSWORD = "S3cretPassw0rd"
SMTP_PASSWORD = "Smtp-S3cret-Passw0rd"
AWS_SECRET = "AwsS3cretAccessKey0123456789"
AWS_KEY_ID = "AKIAS3CRETKEYID00000"
SECRETS = (PASSWORD, SMTP_PASSWORD, AWS_SECRET, AWS_KEY_ID)


def with_password(url: str, password: str = PASSWORD) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def formatted(error: BaseException) -> str:
    """Everything a log or the UI could show of `error`: message, traceback, chained causes."""
    return "".join(traceback.format_exception(error))


# -- redaction (no server needed) ------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "postgresql://app:S3cretPassw0rd@db:5432/x",
            "postgresql://app:***@db:5432/x",
        ),
        ("see 'postgres://u:p%40ss@h/db' now", "see 'postgres://u:***@h/db' now"),
        ("postgresql://u:with@at@h/db", "postgresql://u:***@h/db"),
        ("postgresql://:only@h/db", "postgresql://:***@h/db"),
        (
            "postgresql://h/db?sslmode=require&password=xyz",
            "postgresql://h/db?sslmode=require&password=***",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///data/source.db", "sqlite:///data/source.db"),
    ],
)
def test_redact_url(text, expected):
    assert redact_url(text) == expected


def test_redact_secrets_masks_the_bare_password_too():
    url = "postgresql://u:p%2Fw0rd@h/db"
    message = 'invalid token "p%2Fw0rd", decoded "p/w0rd", in postgresql://u:p%2Fw0rd@h/db'
    safe = redact_secrets(message, url)
    assert "p%2Fw0rd" not in safe and "p/w0rd" not in safe
    assert "postgresql://u:***@h/db" in safe


def test_wrong_scheme_error_names_the_url_without_its_password():
    db = SourceDatabase(f"mysql://app:{PASSWORD}@db.example:3306/app")
    with pytest.raises(ValueError, match="unsupported source database URL") as raised:
        db.dialect  # noqa: B018 - the property raises
    assert "mysql://app:***@db.example:3306/app" in str(raised.value)
    assert not leaks(formatted(raised.value))


def test_malformed_url_error_names_the_url_without_its_password():
    db = SourceDatabase(f"postgresql://app:{PASSWORD}@[::1/app")
    with pytest.raises(ValueError, match="invalid source database URL") as raised:
        db.dialect  # noqa: B018
    assert "app:***@" in str(raised.value) and not leaks(formatted(raised.value))


def test_repr_masks_the_password():
    db = SourceDatabase(f"postgresql://app:{PASSWORD}@db/app")
    assert repr(db) == "SourceDatabase(url='postgresql://app:***@db/app')"
    assert PASSWORD not in str(db)


@pytest.mark.parametrize(
    "url",
    [
        # libpq quotes the bad token — here, the password itself.
        f"postgresql://postgres:{PASSWORD}%zz@127.0.0.1:5432/x",
        f"postgresql://postgres:{PASSWORD}%00@127.0.0.1:5432/x",
        # libpq quotes the whole URI.
        f"postgresql://postgres:{PASSWORD}@[127.0.0.1/x",
        # Nothing listens there: a plain connection failure.
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/x",
    ],
)
def test_failed_connection_never_echoes_the_password(url):
    db = SourceDatabase(url)
    with pytest.raises(Exception) as raised:
        db.scalar("SELECT 1")
    error = raised.value
    assert not leaks(formatted(error)), formatted(error)
    if isinstance(error, ValueError) and "source database URL" in str(error):
        return  # refused before any connection: the malformed-URL message above
    # Still the driver's class, so callers (and requests/messages.py) read it as before.
    assert type(error).__name__ == "OperationalError"
    assert "Failed to connect" in str(error)


def test_smtp_settings_repr_hides_the_password():
    smtp = SmtpSettings("mail", 587, "from@x", "reports", SMTP_PASSWORD, True)
    assert SMTP_PASSWORD not in repr(smtp) and smtp.password == SMTP_PASSWORD


# -- how resources get their values ----------------------------------------------------


def _clear(monkeypatch, tmp_path):
    for name in (settings.SOURCE_URL_VAR, settings.STORE_URL_VAR, "EXPORT_WORK_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path / "data"))


def test_unset_source_url_is_the_embedded_default_as_a_literal(monkeypatch, tmp_path):
    _clear(monkeypatch, tmp_path)
    monkeypatch.setenv(settings.SOURCE_URL_VAR, "   ")  # blank counts as unset
    resources = default_resources()
    expected = f"sqlite:///{(tmp_path / 'data' / 'source.db').resolve()}"
    assert resources["source"].url == expected == settings.source_url()
    assert not isinstance(resources["source"].url, dg.EnvVar)
    assert not isinstance(resources["store"].url, dg.EnvVar)
    # The embedded default still seeds itself and answers.
    db = resources["source"].database()
    assert db.scalar("SELECT count(*) FROM organizations") > 0


def test_set_urls_reach_resources_by_variable_name_only(monkeypatch, tmp_path):
    _clear(monkeypatch, tmp_path)
    monkeypatch.setenv(settings.SOURCE_URL_VAR, f"postgresql://app:{PASSWORD}@db/app")
    monkeypatch.setenv(settings.STORE_URL_VAR, str(tmp_path / "exports"))
    resources = default_resources()
    for key, name in (("source", settings.SOURCE_URL_VAR), ("store", settings.STORE_URL_VAR)):
        url = resources[key].url
        assert isinstance(url, dg.EnvVar) and url.env_var_name == name


def test_env_var_value_is_read_at_use_and_stripped(monkeypatch, tmp_path, sqlite_source):
    monkeypatch.setenv(settings.SOURCE_URL_VAR, f"  {sqlite_source.url}\n")
    monkeypatch.setenv(settings.STORE_URL_VAR, f" {tmp_path / 'exports'} ")
    with dg.build_resources(
        {
            "source": SourceResource(url=dg.EnvVar(settings.SOURCE_URL_VAR)),
            "store": StoreResource(url=dg.EnvVar(settings.STORE_URL_VAR), s3=S3Resource()),
        }
    ) as built:
        assert built.source.database().url == sqlite_source.url
        assert built.source.database().scalar("SELECT count(*) FROM organizations") > 0
        assert built.store.store().url == str(tmp_path / "exports")


def test_a_literal_url_still_works(sqlite_source):
    """Tests (conftest.export_resources) and the CLI pass the URL itself."""
    resource = SourceResource(url=sqlite_source.url)
    assert resource.database().scalar("SELECT count(*) FROM organizations") > 0


# -- end to end: the code location as deployed -----------------------------------------

RESOURCES_QUERY = """
query Resources($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
    __typename
    ... on ResourceDetailsList {
      results {
        name
        description
        configFields { name description isSecret defaultValueAsJson }
        configuredValues { key value type }
      }
    }
    ... on PythonError { message }
  }
  utilizedEnvVarsOrError(repositorySelector: $selector) {
    __typename
    ... on EnvVarWithConsumersList { results { envVarName } }
  }
}
"""
CONFIG_SCHEMA_QUERY = """
query Schema($selector: PipelineSelector!) {
  runConfigSchemaOrError(selector: $selector) {
    __typename
    ... on RunConfigSchema { rootDefaultYaml }
  }
}
"""
RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status runConfigYaml tags { key value } }
  }
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
  }
}
"""


@contextlib.contextmanager
def code_location(instance: dg.DagsterInstance) -> Iterator:
    """The code location as `dagster dev` loads it: a gRPC code server of its own."""
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget

    target = ModuleTarget(
        module_name="export_pipelines.definitions",
        attribute=None,
        working_directory=str(ROOT),
        location_name="export_pipelines",
    )
    with create_test_daemon_workspace_context(target, instance) as process_context:
        entry = next(
            iter(process_context.create_request_context().get_code_location_entries().values())
        )
        assert entry.code_location, entry.load_error
        yield process_context


def graphql(process_context, query: str, variables: dict) -> dict:
    from dagster_graphql.test.utils import execute_dagster_graphql

    result = execute_dagster_graphql(process_context.create_request_context(), query, variables)
    return result.data


def repository_selector(process_context) -> dict:
    from dagster_graphql.test.utils import infer_repository_selector

    return infer_repository_selector(process_context.create_request_context())


def launch(process_context, job: str, **params) -> str:
    from dagster_graphql.client.query import LAUNCH_PIPELINE_EXECUTION_MUTATION

    selector = {**repository_selector(process_context), "pipelineName": job}
    if "assetSelection" in params:
        selector["assetSelection"] = params.pop("assetSelection")
    launched = graphql(
        process_context,
        LAUNCH_PIPELINE_EXECUTION_MUTATION,
        {"executionParams": {"selector": selector, **params}},
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def wait_for_runs(instance: dg.DagsterInstance, timeout: float = 180) -> list[dg.DagsterRun]:
    deadline = time.monotonic() + timeout
    while True:
        runs = list(instance.get_runs())
        if all(run.is_finished for run in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(
                "runs did not finish: "
                + "; ".join(
                    f"{r.job_name} {r.status.value} "
                    f"{[e.message for e in instance.all_logs(r.run_id)][-3:]}"
                    for r in runs
                )
            )
        time.sleep(0.5)


def stored_texts(instance: dg.DagsterInstance, process_context) -> dict[str, str]:
    """Everything Dagster stored about the runs and ticks, serialized, by where it came from."""
    from dagster._serdes import serialize_value

    texts: dict[str, str] = {}
    for run in instance.get_runs():
        rid = run.run_id[:8]
        texts[f"run {rid} ({run.job_name})"] = serialize_value(run)
        texts[f"run config {rid}"] = json.dumps(run.run_config)
        if run.job_snapshot_id:
            snap = instance.get_job_snapshot(run.job_snapshot_id)
            texts[f"job snapshot {rid}"] = serialize_value(snap)
        if run.execution_plan_snapshot_id:
            plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            texts[f"plan snapshot {rid}"] = serialize_value(plan)
        records = instance.get_records_for_run(run.run_id, limit=100_000).records
        texts[f"event records {rid}"] = "\n".join(
            serialize_value(r.event_log_entry) for r in records
        )
        texts[f"all_logs {rid}"] = "\n".join(e.to_json() for e in instance.all_logs(run.run_id))
        texts[f"graphql run {rid}"] = json.dumps(
            graphql(process_context, RUN_QUERY, {"runId": run.run_id})
        )
    for state in instance.all_instigator_state():
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=100)
        texts[f"ticks {state.instigator_name}"] = "\n".join(serialize_value(t) for t in ticks)
    # And every file of the instance, raw: compute logs, the SQLite event and run stores.
    for path in Path(instance.root_directory).rglob("*"):
        if path.is_file():
            texts[f"file {path.relative_to(instance.root_directory)}"] = path.read_bytes().decode(
                "utf-8", "replace"
            )
    return texts


@pytest.fixture
def secret_postgres() -> Iterator[SourceDatabase]:
    """The demo data in a PostgreSQL database of its own, reached with a password in the URL.

    Trust authentication accepts any password: the URL connects, and its password is a
    secret every record is searched for. Unreachable PostgreSQL fails in CI (conftest).
    """
    with scratch_postgres_database() as url:
        db = seed(SourceDatabase(with_password(url)))
        db.execute("DELETE FROM export_requests")  # only this test's request is served
        yield db


# A code server, run workers and an SMTP server: ~20 s, so with the slow tests (`make test`).
@pytest.mark.slow
def test_no_secret_reaches_the_ui_run_config_or_event_logs(secret_postgres, tmp_path, monkeypatch):
    from dagster._daemon.sensor import execute_sensor_iteration

    from export_pipelines.requests.ledger import RequestLedger

    from .smtp_server import SmtpServer

    db = secret_postgres
    assert PASSWORD in db.url
    ledger = RequestLedger(db)
    user = db.fetch_rows("SELECT id, organization_id FROM users ORDER BY id LIMIT 1")[0]
    day = DEMO_DAY.isoformat()
    request_id = ledger.insert(
        user["organization_id"],
        user["id"],
        "scan_results",
        "CSV",
        filters={"date_from": day, "date_to": day},
    )
    subscription = db.fetch_rows(
        "SELECT id, organization_id FROM report_subscriptions WHERE active = :yes ORDER BY id",
        {"yes": True},
    )[0]

    with SmtpServer(tls=True, credentials=("reports", SMTP_PASSWORD)) as smtp:
        env = {
            settings.SOURCE_URL_VAR: db.url,
            settings.STORE_URL_VAR: str(tmp_path / "exports"),
            "EXPORT_WORK_DIR": str(tmp_path / "work"),
            "EXPORT_DATA_DIR": str(tmp_path / "data"),
            "EXPORT_SMTP_HOST": smtp.host,
            "EXPORT_SMTP_PORT": str(smtp.port),
            "EXPORT_SMTP_FROM": "reports@export-pipelines.test",
            "EXPORT_SMTP_USER": "reports",
            "EXPORT_SMTP_PASSWORD": SMTP_PASSWORD,
            "EXPORT_SMTP_STARTTLS": "true",
            "SSL_CERT_FILE": str(smtp.ca_file),
            "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)

        # Runs launch at once (no queue daemon here), each in a run worker process of its own.
        immediate = {
            "run_coordinator": {
                "module": "dagster._core.run_coordinator",
                "class": "DefaultRunCoordinator",
            }
        }
        with (
            dg.instance_for_test(overrides=immediate) as instance,
            code_location(instance) as location,
        ):
            selector = repository_selector(location)

            # Deployment → Resources, as the UI asks for it.
            shown = graphql(location, RESOURCES_QUERY, {"selector": selector})
            resources = {
                r["name"]: r for r in shown["allTopLevelResourceDetailsOrError"]["results"]
            }
            assert set(resources) == {"source", "store", "work", "s3"}
            values = {
                name: {v["key"]: (v["type"], v["value"]) for v in r["configuredValues"]}
                for name, r in resources.items()
            }
            assert values["source"]["url"] == ("ENV_VAR", settings.SOURCE_URL_VAR)
            assert values["store"]["url"] == ("ENV_VAR", settings.STORE_URL_VAR)
            assert values["s3"]["aws_secret_access_key"] == ("VALUE", "null")
            used = {v["envVarName"] for v in shown["utilizedEnvVarsOrError"]["results"]}
            assert {settings.SOURCE_URL_VAR, settings.STORE_URL_VAR} <= used
            assert not leaks(json.dumps(shown)), "the Resources page shows a secret"

            # The Launchpad's default config for each job.
            for job in ("serve_export_request_job", "deliver_report_job", "__ASSET_JOB"):
                schema = graphql(
                    location,
                    CONFIG_SCHEMA_QUERY,
                    {"selector": {**selector, "pipelineName": job}},
                )
                assert schema["runConfigSchemaOrError"]["__typename"] == "RunConfigSchema"
                assert not leaks(json.dumps(schema)), f"{job}'s launchpad default shows a secret"

            # One daemon sensor pass: adds the organizations, launches the request's run.
            list(execute_sensor_iteration(location, logging.getLogger("test_secrets"), None, None))
            # A materialization from the UI: an unpartitioned asset and one partition.
            launch(
                location,
                "__ASSET_JOB",
                assetSelection=[{"path": ["operations", "export_statistics"]}],
            )
            launch(
                location,
                "__ASSET_JOB",
                assetSelection=[{"path": ["scan_results", "extract"]}],
                executionMetadata={
                    "tags": [
                        {
                            "key": "dagster/partition",
                            "value": f"{day}|{user['organization_id']}",
                        }
                    ]
                },
            )
            # A report, emailed with the SMTP login.
            launch(
                location,
                "deliver_report_job",
                runConfigData={
                    "ops": {
                        "deliver_report": {
                            "config": {
                                "subscription_id": subscription["id"],
                                "date_from": day,
                                "date_to": day,
                            }
                        }
                    }
                },
            )
            runs = wait_for_runs(instance, timeout=90)
            by_job = {}
            for run in runs:
                by_job.setdefault(run.job_name, []).append(run)
            assert sorted(by_job) == sorted(
                ["serve_export_request_job", "__ASSET_JOB", "deliver_report_job"]
            ), by_job
            assert len(by_job["__ASSET_JOB"]) == 2
            failed = [r for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
            assert not failed, [
                (r.job_name, [e.message for e in instance.all_logs(r.run_id)][-5:]) for r in failed
            ]
            request_run = by_job["serve_export_request_job"][0]
            assert request_run.tags["export/request_id"] == request_id
            assert ledger.get(request_id)["status"] == "COMPLETED"
            # The report really logged in with the password.
            assert [m.login for m in smtp.received] == ["reports"]

            texts = stored_texts(instance, location)

    # Searched: run records and config, snapshots, event logs, ticks, compute logs.
    for kind in ("run config", "job snapshot", "event records", "ticks export_requests_sensor"):
        assert any(k.startswith(kind) for k in texts), kind
    assert any("compute_logs" in k for k in texts)
    found = {where: leaks(text) for where, text in texts.items() if leaks(text)}
    assert not found, f"secrets found in: {found}"
