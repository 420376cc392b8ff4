"""Production deployment files: the image (Dockerfile), Kubernetes (deploy/k8s) and ECS (deploy/ecs).

There is no Docker engine, Kubernetes cluster or AWS account here, so these tests check what can
be checked without one:

- every instance config (deploy/dagster.yaml, deploy/ecs/dagster.yaml, deploy/k8s/dagster.yaml)
  loads through Dagster's own machinery (`InstanceRef.from_dir`), each configurable class is
  imported and its config validated against the class's schema with the variables set, and the
  run launchers, run coordinator and compute log managers are constructed (the K8sRunLauncher
  with the in-cluster login stubbed, the EcsRunLauncher with moto's in-process AWS);
- the run pod the K8sRunLauncher would create from deploy/k8s/values.yaml, and the run task
  definition the EcsRunLauncher would register, carry the secrets, settings and shared volume;
- deploy/k8s/values.yaml uses the chart's documented keys with the right types, holds no
  secret value, and implies deploy/k8s/dagster.yaml;
- the Dockerfile pins its base image, runs as a non-root user with the gRPC server as CMD and
  installs exactly deploy/requirements.txt, which pins every dependency pyproject.toml declares;
- (slow) the image's environment, built the way the Dockerfile builds it in a fresh venv,
  imports and validates the code location and serves it over gRPC.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.ref import InstanceRef
from dagster._serdes.config_class import ConfigurableClassData
from packaging.requirements import Requirement

from .conftest import scratch_postgres_database
from .dev_server import free_port

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
VALUES = ROOT / "deploy" / "k8s" / "values.yaml"
K8S_INSTANCE = ROOT / "deploy" / "k8s" / "dagster.yaml"
ECS_INSTANCE = ROOT / "deploy" / "ecs" / "dagster.yaml"
ECS_WORKSPACE = ROOT / "deploy" / "ecs" / "workspace.yaml"
BASE_INSTANCE = ROOT / "deploy" / "dagster.yaml"
README = ROOT / "deploy" / "README.md"

DAGSTER_VERSION = "1.13.27"
LIBRARIES_VERSION = "0.29.27"
# The Dagster family the image must carry, pinned exactly.
DAGSTER_PINS = {
    "dagster": DAGSTER_VERSION,
    "dagster-webserver": DAGSTER_VERSION,
    "dagster-graphql": DAGSTER_VERSION,
    "dagster-aws": LIBRARIES_VERSION,
    "dagster-postgres": LIBRARIES_VERSION,
    "dagster-k8s": LIBRARIES_VERSION,
}
GRPC_CMD = [
    "dagster",
    "api",
    "grpc",
    "-m",
    "export_pipelines.definitions",
    "-h",
    "0.0.0.0",
    "-p",
    "4000",
]
# What `helm install dagster … -n dagster` names things (deploy/k8s/dagster.yaml assumes it).
RELEASE, NAMESPACE = "dagster", "dagster"
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome default

# The Helm chart's keys this project relies on, with their types, from the chart's
# helm/dagster/values.schema.json and values.yaml in github.com/dagster-io/dagster (chart 1.13.x).
# `[0]` is the first item of a list. A string instead of a type is the one value allowed.
CHART_KEY_PATHS: list[tuple[str, Any]] = [
    ("global.postgresqlSecretName", str),
    ("generatePostgresqlPasswordSecret", bool),
    ("postgresql.enabled", bool),
    ("postgresql.postgresqlHost", str),
    ("postgresql.postgresqlUsername", str),
    ("postgresql.postgresqlDatabase", str),
    ("postgresql.postgresqlParams", dict),
    ("postgresql.postgresqlScheme", str),
    ("postgresql.service.port", int),
    ("dagsterWebserver.image.repository", str),
    ("dagsterWebserver.image.tag", str),
    ("dagsterWebserver.image.pullPolicy", str),
    ("dagsterWebserver.envSecrets", list),
    ("dagsterDaemon.enabled", bool),
    ("dagsterDaemon.image.repository", str),
    ("dagsterDaemon.image.tag", str),
    ("dagsterDaemon.runCoordinator.enabled", bool),
    ("dagsterDaemon.runCoordinator.type", "QueuedRunCoordinator"),
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns", int),
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueIntervalSeconds", int),
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueUseThreads", bool),
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueNumWorkers", int),
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits", list),
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[0].key", str),
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[0].limit", int),
    (
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[0].value"
        ".applyLimitPerUniqueValue",
        bool,
    ),
    ("dagsterDaemon.runMonitoring", dict),
    ("dagsterDaemon.runRetries", dict),
    ("dagsterDaemon.sensors.useThreads", bool),
    ("dagsterDaemon.schedules.useThreads", bool),
    ("scheduler.type", "DagsterDaemonScheduler"),
    ("scheduler.config.daemonScheduler.maxCatchupRuns", int),
    ("runLauncher.type", "K8sRunLauncher"),
    ("runLauncher.config.k8sRunLauncher.loadInclusterConfig", bool),
    ("runLauncher.config.k8sRunLauncher.imagePullPolicy", str),
    ("runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfig", dict),
    ("runLauncher.config.k8sRunLauncher.runK8sConfig.jobSpecConfig", dict),
    ("computeLogManager.type", "S3ComputeLogManager"),
    ("computeLogManager.config.s3ComputeLogManager.bucket", str),
    ("computeLogManager.config.s3ComputeLogManager.prefix", str),
    ("computeLogManager.config.s3ComputeLogManager.uploadInterval", int),
    ("telemetry.enabled", bool),
    ("dagster-user-deployments.enabled", bool),
    ("dagster-user-deployments.enableSubchart", bool),
    ("dagster-user-deployments.deployments", list),
    ("dagster-user-deployments.deployments[0].name", str),
    ("dagster-user-deployments.deployments[0].image.repository", str),
    ("dagster-user-deployments.deployments[0].image.tag", str),
    ("dagster-user-deployments.deployments[0].image.pullPolicy", str),
    ("dagster-user-deployments.deployments[0].dagsterApiGrpcArgs", list),
    ("dagster-user-deployments.deployments[0].port", int),
    ("dagster-user-deployments.deployments[0].includeConfigInLaunchedRuns.enabled", bool),
    ("dagster-user-deployments.deployments[0].env", list),
    ("dagster-user-deployments.deployments[0].envSecrets", list),
    ("dagster-user-deployments.deployments[0].envConfigMaps", list),
    ("dagster-user-deployments.deployments[0].volumes", list),
    ("dagster-user-deployments.deployments[0].volumeMounts", list),
    ("dagster-user-deployments.deployments[0].podSecurityContext", dict),
    ("dagster-user-deployments.deployments[0].securityContext", dict),
    ("dagster-user-deployments.deployments[0].resources", dict),
]
# The keys the chart's schema defines for the objects this file sets (same source); a key outside
# these is a typo the chart would reject or, worse, silently ignore.
CHART_ALLOWED_KEYS: dict[str, set[str]] = {
    "": {
        "dagsterWebserver", "dagster-user-deployments", "postgresql",
        "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
        "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher",
        "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount",
        "global", "retention", "additionalInstanceConfig",
    },
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName"},
    "postgresql": {
        "image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
        "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service",
    },
    "dagsterWebserver.image": {"repository", "tag", "pullPolicy"},
    "dagsterDaemon": {
        "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
        "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
        "startupProbe", "annotations", "runMonitoring", "runRetries", "sensors", "schedules",
        "schedulerName", "volumeMounts", "volumes", "initContainerResources",
    },
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
        "dequeueNumWorkers", "dequeueUseThreads", "blockOpConcurrencyLimitedRuns",
    },
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[0]": {
        "key", "value", "limit",
    },
    "scheduler": {"type", "config"},
    "scheduler.config.daemonScheduler": {"maxCatchupRuns", "maxTickRetries"},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
        "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
        "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
    },
    "runLauncher.config.k8sRunLauncher.runK8sConfig": {
        "containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig",
        "jobMetadata",
    },
    "computeLogManager": {"type", "config"},
    "computeLogManager.config.s3ComputeLogManager": {
        "bucket", "localDir", "prefix", "useSsl", "verify", "verifyCertPath", "endpointUrl",
        "skipEmptyFiles", "uploadInterval", "uploadExtraArgs", "showUrlOnly", "region",
    },
    "telemetry": {"enabled"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[0]": {
        "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
        "deploymentNamespace", "port", "env", "envConfigMaps", "envSecrets", "annotations",
        "nodeSelector", "affinity", "tolerations", "podSecurityContext", "securityContext",
        "resources", "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumeMounts",
        "volumes", "schedulerName", "initContainers", "sidecarContainers",
    },
}  # fmt: skip
PULL_POLICIES = {"Always", "IfNotPresent", "Never"}

# Values the instance configs read from the environment, as a deployment would set them (no
# connection is made: the K8s login is stubbed, AWS is moto's, PostgreSQL is not opened here).
PG_ENV = {
    "DAGSTER_PG_HOST": "dagster-postgres.example.internal",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-real-password",
    "DAGSTER_PG_DB": "dagster",
}
AWS_ENV = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}
ACCOUNT = "123456789012"
ECS_ENV = {
    "DAGSTER_ECS_EXECUTION_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/dagster-run-execution",
    "DAGSTER_ECS_TASK_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/dagster-run",
    "DAGSTER_ECS_LOG_GROUP": "/ecs/dagster-runs",
    "DAGSTER_PG_PASSWORD_SECRET_ARN": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:pg",
    "EXPORT_SOURCE_URL_SECRET_ARN": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:source",
    "EXPORT_SMTP_PASSWORD_SECRET_ARN": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:smtp",
    "DAGSTER_COMPUTE_LOGS_BUCKET": "example-dagster-compute-logs",
    "EXPORT_STORE_URL": "s3://example-exports-bucket/exports",
    "EXPORT_WORK_DIR": "/mnt/export-work",
    "EXPORT_SMTP_HOST": "smtp.example.com",
    "EXPORT_SMTP_PORT": "587",
    "EXPORT_SMTP_FROM": "exports@example.com",
    "EXPORT_SMTP_USER": "exports",
    "EXPORT_SMTP_STARTTLS": "true",
}


# -- helpers --------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dockerfile_instructions(text: str = "") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = text or DOCKERFILE.read_text()
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return instructions


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from a stage)."""
    copies = []
    for keyword, args in dockerfile_instructions():
        if keyword != "COPY":
            continue
        words = shlex.split(args)
        if any(word.startswith("--from") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        copies.append((paths[:-1], paths[-1]))
    return copies


def pip_requirements_source(name: str) -> Path:
    """The build-context file behind the Dockerfile's `pip install -r <…/name>`: found through
    the RUN line and the COPY that put the file there, so the test installs what the image does."""
    installed = None
    for keyword, args in dockerfile_instructions():
        if keyword == "RUN" and "pip install" in args:
            match = re.search(r"-r\s+(\S+)", args)
            if match and Path(match.group(1)).name == name:
                installed = match.group(1)
    assert installed, f"no `pip install -r …/{name}` in the Dockerfile"
    for sources, destination in dockerfile_copies():
        for source in sources:
            target = destination + Path(source).name if destination.endswith("/") else destination
            if target == installed:
                return ROOT / source
    raise AssertionError(f"the Dockerfile installs {installed} but copies no file there")


def requirements_path() -> Path:
    return pip_requirements_source("requirements.txt")


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            specifiers = list(requirement.specifier)
            assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not pinned: {line}"
            pins[canonical(requirement.name)] = specifiers[0].version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dotted(data: Any, path: str) -> Any:
    """The value at a dotted path ("a.b[0].c"); KeyError when any part is missing."""
    value = data
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            value = value[int(part[1:-1])]
        else:
            if not isinstance(value, dict) or part not in value:
                raise KeyError(path)
            value = value[part]
    return value


def instance_ref(config: Path, tmp_path: Path) -> InstanceRef:
    """Dagster's own loading of $DAGSTER_HOME/dagster.yaml: schema-checked, classes recorded."""
    home = tmp_path / f"home-{config.parent.name}"
    home.mkdir()
    shutil.copy(config, home / "dagster.yaml")
    return InstanceRef.from_dir(str(home))


def validated_class_config(data: ConfigurableClassData) -> dict:
    """Import the configurable class and check its config against the class's own schema, with
    `env:` values resolved from the environment (what `rehydrate` does before it constructs)."""
    module = importlib.import_module(data.module_name)
    cls = getattr(module, data.class_name)
    result = process_config(resolve_to_config_type(cls.config_type()), data.config_dict)
    assert result.success, f"{data.module_name}.{data.class_name}: {result.errors}"
    return result.value


def class_data(ref: InstanceRef) -> dict[str, ConfigurableClassData]:
    named = {
        "run_launcher": ref.run_launcher_data,
        "run_coordinator": ref.run_coordinator_data,
        "compute_logs": ref.compute_logs_data,
        "storage": ref.storage_data,
        "run_storage": ref.run_storage_data,
        "event_log_storage": ref.event_storage_data,
        "schedule_storage": ref.schedule_storage_data,
        "scheduler": ref.scheduler_data,
    }
    return {name: data for name, data in named.items() if data is not None}


def set_env(monkeypatch, *envs: dict[str, str]) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for env in envs:
        for name, value in env.items():
            monkeypatch.setenv(name, value)


def require_dagster_k8s():
    try:
        return importlib.import_module("dagster_k8s")
    except ModuleNotFoundError:
        pytest.fail(
            f"dagster-k8s is not installed: add 'dagster-k8s=={LIBRARIES_VERSION}' to "
            "pyproject.toml's dependencies (deploy/requirements.txt already pins it for the "
            "image) and reinstall (make install)"
        )


def user_deployment(values: dict) -> dict:
    return values["dagster-user-deployments"]["deployments"][0]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# -- instance configs -----------------------------------------------------------------------------


def test_base_instance_config_loads_with_dagster(tmp_path, monkeypatch):
    set_env(monkeypatch, PG_ENV)
    ref = instance_ref(BASE_INSTANCE, tmp_path)
    configs = {name: validated_class_config(data) for name, data in class_data(ref).items()}
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    coordinator = ref.run_coordinator
    assert coordinator.get_run_queue_config().max_concurrent_runs == 4
    # Launches run side by side, as many as may run at once (a burst is not launched serially).
    assert coordinator.dequeue_use_threads and coordinator.dequeue_num_workers == 4
    assert configs["storage"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_ecs_instance_config_loads_and_constructs(tmp_path, monkeypatch):
    """EcsRunLauncher's constructor makes boto3 clients (and would describe a task definition if
    given an ARN): it is constructed inside moto's in-process AWS, so nothing leaves the machine.
    The PostgreSQL storage is only schema-checked here (constructing it connects; see below)."""
    import moto
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    set_env(monkeypatch, PG_ENV, AWS_ENV, ECS_ENV)
    ref = instance_ref(ECS_INSTANCE, tmp_path)
    configs = {name: validated_class_config(data) for name, data in class_data(ref).items()}
    assert (ref.run_launcher_data.module_name, ref.run_launcher_data.class_name) == (
        "dagster_aws.ecs",
        "EcsRunLauncher",
    )
    assert configs["run_launcher"]["include_sidecars"] is False
    assert configs["run_launcher"]["secrets_tag"] is None
    with moto.mock_aws():
        launcher = ref.run_launcher
        compute_logs = ref.compute_log_manager
    assert isinstance(launcher, EcsRunLauncher)
    assert launcher.container_name == "run"
    assert launcher.task_definition is None  # parts, not a fixed ARN: see deploy/ecs/dagster.yaml
    assert (
        launcher.task_definition_dict["execution_role_arn"]
        == ECS_ENV["DAGSTER_ECS_EXECUTION_ROLE_ARN"]
    )
    assert launcher.secrets == [
        {"name": "DAGSTER_PG_PASSWORD", "valueFrom": ECS_ENV["DAGSTER_PG_PASSWORD_SECRET_ARN"]},
        {"name": "EXPORT_SOURCE_URL", "valueFrom": ECS_ENV["EXPORT_SOURCE_URL_SECRET_ARN"]},
        {"name": "EXPORT_SMTP_PASSWORD", "valueFrom": ECS_ENV["EXPORT_SMTP_PASSWORD_SECRET_ARN"]},
    ]
    assert launcher.secrets_tags == [] and launcher.include_sidecars is False
    assert isinstance(compute_logs, S3ComputeLogManager)
    assert configs["compute_logs"]["bucket"] == ECS_ENV["DAGSTER_COMPUTE_LOGS_BUCKET"]

    base = instance_ref(BASE_INSTANCE, tmp_path)
    assert ref.run_coordinator_data == base.run_coordinator_data
    assert ref.storage_data == base.storage_data
    assert ref.settings["run_monitoring"]["max_resume_run_attempts"] == 0


def test_ecs_workspace_loads_with_dagster():
    from dagster._core.workspace.config_schema import process_workspace_config

    result = process_workspace_config(load_yaml(ECS_WORKSPACE))
    assert result.success, result.errors
    (entry,) = result.value["load_from"]
    assert entry["grpc_server"]["port"] == int(GRPC_CMD[GRPC_CMD.index("-p") + 1])
    assert entry["grpc_server"]["location_name"] == project_config()["code_location_name"]


def test_ecs_run_task_definition_carries_secrets_settings_and_work_volume(tmp_path, monkeypatch):
    """The task definition the EcsRunLauncher registers for a run (in moto): the code location's
    image, the secrets as Secrets Manager references, the settings, and the shared work area.
    Only the daemon's own ECS task (cluster, network) is stubbed: that needs ECS's metadata API."""
    import boto3
    import dagster_aws.ecs.launcher as ecs_launcher
    import moto
    from dagster_aws.ecs.container_context import EcsContainerContext

    set_env(monkeypatch, PG_ENV, AWS_ENV, ECS_ENV)
    image = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/export-pipelines:0.1.0"
    run = fake_run(image, container_context={})
    monkeypatch.setattr(
        ecs_launcher,
        "get_current_ecs_task_metadata",
        lambda: type("Metadata", (), {"task_arn": "daemon-task", "cluster": "dagster"})(),
    )
    monkeypatch.setattr(ecs_launcher, "get_current_ecs_task", lambda *args: {})
    monkeypatch.setattr(
        ecs_launcher, "get_task_kwargs_from_current_task", lambda *args: {"cluster": "dagster"}
    )
    with moto.mock_aws():
        launcher = instance_ref(ECS_INSTANCE, tmp_path).run_launcher
        context = EcsContainerContext.create_for_run(run, launcher)
        kwargs = launcher._run_task_kwargs(run, image, context)
        task = boto3.client("ecs").describe_task_definition(taskDefinition=kwargs["taskDefinition"])
    definition = task["taskDefinition"]
    (container,) = definition["containerDefinitions"]  # include_sidecars: false
    assert container["name"] == "run" and container["image"] == image
    assert "command" not in container and "entryPoint" not in container  # the image's; overridden
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == {
        "DAGSTER_PG_PASSWORD": ECS_ENV["DAGSTER_PG_PASSWORD_SECRET_ARN"],
        "EXPORT_SOURCE_URL": ECS_ENV["EXPORT_SOURCE_URL_SECRET_ARN"],
        "EXPORT_SMTP_PASSWORD": ECS_ENV["EXPORT_SMTP_PASSWORD_SECRET_ARN"],
    }
    environment = {e["name"]: e["value"] for e in container["environment"]}
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_DB", "EXPORT_STORE_URL", "EXPORT_WORK_DIR"):
        assert environment[name] == os.environ[name]
    assert not {"DAGSTER_PG_PASSWORD", "EXPORT_SOURCE_URL"} & set(environment)  # secrets only
    (mount,) = container["mountPoints"]
    assert mount["containerPath"] == ECS_ENV["EXPORT_WORK_DIR"] and not mount["readOnly"]
    (volume,) = definition["volumes"]
    assert volume["name"] == mount["sourceVolume"] and "efsVolumeConfiguration" in volume
    assert (
        container["logConfiguration"]["options"]["awslogs-group"]
        == ECS_ENV["DAGSTER_ECS_LOG_GROUP"]
    )
    assert definition["executionRoleArn"] == ECS_ENV["DAGSTER_ECS_EXECUTION_ROLE_ARN"]
    assert definition["taskRoleArn"] == ECS_ENV["DAGSTER_ECS_TASK_ROLE_ARN"]
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert (definition["cpu"], definition["memory"]) == ("1024", "4096")


def test_ecs_instance_opens_its_postgres_storage(tmp_path, monkeypatch):
    """The whole ECS instance, storage included, against a scratch PostgreSQL database."""
    import moto
    from dagster import DagsterInstance

    with scratch_postgres_database() as url:
        parts = urllib.parse.urlsplit(url)
        pg = {
            "DAGSTER_PG_HOST": parts.hostname or "127.0.0.1",
            "DAGSTER_PG_PORT": str(parts.port or 5432),
            "DAGSTER_PG_USER": parts.username or "postgres",
            "DAGSTER_PG_PASSWORD": parts.password or "trust",  # the test server trusts local users
            "DAGSTER_PG_DB": parts.path.lstrip("/"),
        }
        set_env(monkeypatch, pg)
        set_env(monkeypatch, AWS_ENV, ECS_ENV)
        with moto.mock_aws():
            instance = DagsterInstance.from_ref(instance_ref(ECS_INSTANCE, tmp_path))
            try:
                assert instance.get_runs() == []
                assert type(instance.run_launcher).__name__ == "EcsRunLauncher"
                assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 4
            finally:
                instance.dispose()


def test_k8s_instance_config_loads_and_constructs(tmp_path, monkeypatch):
    """K8sRunLauncher's constructor loads the in-cluster login; that one call is stubbed, so the
    launcher and its Kubernetes clients are built for real (no request is made)."""
    dagster_k8s = require_dagster_k8s()
    import kubernetes.config

    set_env(monkeypatch, AWS_ENV, {"DAGSTER_PG_PASSWORD": PG_ENV["DAGSTER_PG_PASSWORD"]})
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda *args, **kwargs: None)
    ref = instance_ref(K8S_INSTANCE, tmp_path)
    configs = {name: validated_class_config(data) for name, data in class_data(ref).items()}
    launcher = ref.run_launcher
    assert isinstance(launcher, dagster_k8s.K8sRunLauncher)
    assert launcher.job_namespace == NAMESPACE
    assert launcher.postgres_password_secret == load_yaml(VALUES)["global"]["postgresqlSecretName"]
    assert configs["storage"]["run_storage"]["class_name"] == "PostgresRunStorage"
    assert type(ref.compute_log_manager).__name__ == "S3ComputeLogManager"
    assert type(ref.scheduler).__name__ == "DagsterDaemonScheduler"

    # The chart's `dagster.core.*` module names load (Dagster maps them to dagster._core).
    base = instance_ref(BASE_INSTANCE, tmp_path)
    assert ref.run_coordinator_data == base.run_coordinator_data
    assert ref.run_coordinator.get_run_queue_config() == base.run_coordinator.get_run_queue_config()
    for key, value in base.settings["run_monitoring"].items():
        assert ref.settings["run_monitoring"][key] == value, key


def test_k8s_instance_config_follows_from_values():
    """deploy/k8s/dagster.yaml is what the chart's templates make of values.yaml (the sections
    these values set; templates/helpers/instance/*.tpl), so the two cannot drift apart."""
    values, rendered = load_yaml(VALUES), load_yaml(K8S_INSTANCE)
    pg = values["postgresql"]
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg["postgresqlParams"],
        "scheme": pg["postgresqlScheme"],
    }
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        assert rendered[storage]["config"] == {"postgres_db": postgres_db}, storage

    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert rendered["run_coordinator"] == {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {
            "max_concurrent_runs": queued["maxConcurrentRuns"],
            "tag_concurrency_limits": queued["tagConcurrencyLimits"],
            "dequeue_interval_seconds": queued["dequeueIntervalSeconds"],
            "dequeue_use_threads": queued["dequeueUseThreads"],
            "dequeue_num_workers": queued["dequeueNumWorkers"],
        },
    }

    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher = rendered["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    expected = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "dagster_home": CHART_DAGSTER_HOME,
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "run_k8s_config": {snake(k): v for k, v in k8s["runK8sConfig"].items()},
    }
    for key in ("resources", "envSecrets", "volumes"):
        assert key not in k8s or snake(key) in launcher["config"], key
    assert {k: launcher["config"][k] for k in expected} == expected

    s3 = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert rendered["compute_logs"] == {
        "module": "dagster_aws.s3.compute_log_manager",
        "class": "S3ComputeLogManager",
        "config": {
            "bucket": s3["bucket"],
            "prefix": s3["prefix"],
            "verify": s3.get("verify") is not False,
            "upload_interval": s3["uploadInterval"],
        },
    }
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert rendered["run_monitoring"] == {snake(k): v for k, v in monitoring.items()}
    assert "run_retries" not in rendered and not values["dagsterDaemon"]["runRetries"]["enabled"]
    daemon_scheduler = values["scheduler"]["config"]["daemonScheduler"]
    assert rendered["scheduler"]["config"] == {snake(k): v for k, v in daemon_scheduler.items()}
    assert rendered["telemetry"] == values["telemetry"]


def test_k8s_run_pod_from_values(tmp_path, monkeypatch):
    """The Job the K8sRunLauncher would create for a run of the code location, built by
    dagster-k8s from the rendered instance config and the code location's container context as
    the chart passes it (includeConfigInLaunchedRuns; the user-deployments subchart's
    `dagsterUserDeployments.k8sContainerContext`). Nothing is sent to a cluster."""
    require_dagster_k8s()
    import kubernetes.config
    from dagster_k8s.job import construct_dagster_k8s_job

    set_env(monkeypatch, {"DAGSTER_PG_PASSWORD": PG_ENV["DAGSTER_PG_PASSWORD"]})
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda *args, **kwargs: None)
    launcher = instance_ref(K8S_INSTANCE, tmp_path).run_launcher
    values = load_yaml(VALUES)
    deployment = user_deployment(values)
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    context = {
        "k8s": {
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "env_config_maps": [f"{RELEASE}-{deployment['name']}-user-env"]
            + [c["name"] for c in deployment["envConfigMaps"]],
            "env_secrets": [s["name"] for s in deployment["envSecrets"]],
            "volume_mounts": deployment["volumeMounts"],
            "volumes": deployment["volumes"],
            "resources": deployment["resources"],
            "namespace": NAMESPACE,
            "service_account_name": f"{RELEASE}-user-deployments",
            "env": deployment["env"],
            "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
        }
    }
    run = fake_run(image, context)
    container_context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=container_context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-test",
        pod_name="dagster-run-test",
        component="run_worker",
        user_defined_k8s_config=container_context.run_k8s_config,
        labels={},
        env_vars=[],
    )
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == image
    assert container.command is None and container.args[:3] == ["dagster", "api", "execute_run"]
    env = {e.name: e for e in container.env}
    assert env["DAGSTER_HOME"].value == dockerfile_env()["DAGSTER_HOME"] == CHART_DAGSTER_HOME
    pg_secret = env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref
    assert (pg_secret.name, pg_secret.key) == (
        values["global"]["postgresqlSecretName"],
        "postgresql-password",
    )
    assert env["EXPORT_SOURCE_URL"].value is None
    assert env["EXPORT_SOURCE_URL"].value_from.secret_key_ref.name == "export-pipelines-secrets"
    assert env["EXPORT_STORE_URL"].value.startswith("s3://")
    (mount,) = container.volume_mounts
    assert env["EXPORT_WORK_DIR"].value == mount.mount_path
    (volume,) = [v for v in pod.volumes if v.name == mount.name]
    assert volume.persistent_volume_claim.claim_name
    secret_refs = {source.secret_ref.name for source in container.env_from if source.secret_ref}
    assert {s["name"] for s in deployment["envSecrets"]} <= secret_refs
    uid = dockerfile_uid()
    assert pod.security_context.run_as_user == uid and pod.security_context.run_as_non_root
    assert pod.security_context.fs_group == uid
    assert container.resources.limits == deployment["resources"]["limits"]
    assert job.spec.ttl_seconds_after_finished == 86400


def fake_run(image: str, container_context: dict):
    """A run of the code location's asset job, as the daemon hands it to a run launcher."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.storage.dagster_run import DagsterRun

    location = project_config()["code_location_name"]
    origin = JobPythonOrigin(
        "__ASSET_JOB",
        RepositoryPythonOrigin(
            executable_path="/usr/local/bin/python",
            code_pointer=ModuleCodePointer(project_config()["module_name"], "defs", None),
            container_image=image,
            container_context=container_context,
        ),
    )
    remote = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            GrpcServerCodeLocationOrigin(host=location, port=4000, location_name=location),
            "__repository__",
        ),
        "__ASSET_JOB",
    )
    return DagsterRun(
        job_name="__ASSET_JOB",
        run_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        job_code_origin=origin,
        remote_job_origin=remote,
    )


def test_k8s_run_config_is_valid_kubernetes():
    """runK8sConfig's snake_case Kubernetes specs parse as Kubernetes models (dagster-k8s)."""
    require_dagster_k8s()
    import kubernetes.client
    from dagster_k8s.models import k8s_model_from_dict

    run_config = load_yaml(VALUES)["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    k8s_model_from_dict(
        kubernetes.client.V1PodSpec, {"containers": [], **run_config["podSpecConfig"]}
    )
    k8s_model_from_dict(
        kubernetes.client.V1JobSpec, {"template": {}, **run_config["jobSpecConfig"]}
    )


# -- Helm values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path,expected", CHART_KEY_PATHS, ids=[p for p, _ in CHART_KEY_PATHS])
def test_values_use_the_charts_documented_keys(path, expected):
    value = dotted(load_yaml(VALUES), path)
    if isinstance(expected, str):
        assert value == expected
    else:
        # bool is an int to Python, not to the chart's schema
        is_type = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
        assert is_type, f"{path}: {value!r} is not a {expected.__name__}"
    if path.endswith("pullPolicy") or path.endswith("imagePullPolicy"):
        assert value in PULL_POLICIES


def test_values_set_no_key_the_chart_does_not_define():
    values = load_yaml(VALUES)
    for path, allowed in CHART_ALLOWED_KEYS.items():
        section = dotted(values, path) if path else values
        unknown = set(section) - allowed
        assert not unknown, f"{path or 'top level'}: keys the chart does not define: {unknown}"


def test_values_hold_no_secret_values():
    values = load_yaml(VALUES)
    assert "postgresqlPassword" not in values["postgresql"]
    assert values["generatePostgresqlPasswordSecret"] is False

    def walk(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                secret_like = re.search(r"password|secretkey|token|credential", key, re.I)
                if secret_like and isinstance(value, str | int) and not isinstance(value, bool):
                    raise AssertionError(f"{path}.{key} holds what looks like a secret value")
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(values)
    for deployment in values["dagster-user-deployments"]["deployments"]:
        for entry in deployment["env"]:
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY|SOURCE_URL", entry["name"]):
                assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], entry
    text = VALUES.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN|://[^/\s:@]+:[^@\s]+@", text)


def test_values_match_the_image():
    values, deployment = load_yaml(VALUES), user_deployment(load_yaml(VALUES))
    cmd = dockerfile_cmd()
    assert deployment["port"] == int(cmd[cmd.index("-p") + 1])
    # The chart runs `dagster api grpc -h 0.0.0.0 -p <port>` + dagsterApiGrpcArgs: the image's CMD.
    chart_args = ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(deployment["port"])]
    assert chart_args + deployment["dagsterApiGrpcArgs"] == cmd[:3] + cmd[5:] + cmd[3:5]
    assert deployment["dagsterApiGrpcArgs"][1] == project_config()["module_name"]
    uid = dockerfile_uid()
    assert deployment["podSecurityContext"]["runAsUser"] == uid
    pod_security = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"][
        "podSpecConfig"
    ]
    assert pod_security["security_context"]["run_as_user"] == uid
    assert dockerfile_env()["DAGSTER_HOME"] == CHART_DAGSTER_HOME
    for image in (values["dagsterWebserver"]["image"], values["dagsterDaemon"]["image"]):
        assert image["tag"] == DAGSTER_VERSION  # the chart's version = deploy/requirements.txt's
    env = {entry["name"]: entry for entry in deployment["env"]}
    assert env["EXPORT_STORE_URL"]["value"].startswith("s3://")
    (mount,) = deployment["volumeMounts"]
    assert env["EXPORT_WORK_DIR"]["value"] == mount["mountPath"]


def test_readme_names_every_variable_and_kubernetes_object():
    readme = README.read_text()
    ecs = ECS_INSTANCE.read_text()
    names = set(re.findall(r"env: ([A-Z0-9_]+)", ecs))
    names |= set(load_yaml(ECS_INSTANCE)["run_launcher"]["config"]["env_vars"])
    values = load_yaml(VALUES)
    deployment = user_deployment(values)
    names |= {values["global"]["postgresqlSecretName"]}
    names |= {s["name"] for s in deployment["envSecrets"] + deployment["envConfigMaps"]}
    names |= {v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]}
    names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in deployment["env"] if "valueFrom" in e}
    missing = sorted(name for name in names if name not in readme)
    assert not missing, f"deploy/README.md does not mention {missing}"


# -- the image ------------------------------------------------------------------------------------


def dockerfile_cmd() -> list[str]:
    commands = [args for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    return json.loads(commands[-1])


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def dockerfile_uid() -> int:
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    return int(users[-1].split(":")[0])


def project_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]


def test_dockerfile_pins_base_image_user_and_command():
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert bases and len(set(bases)) == 1, bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", bases[0])
    assert dockerfile_uid() > 0  # numeric and not root: Kubernetes' runAsNonRoot can check it
    assert dockerfile_cmd() == GRPC_CMD
    assert GRPC_CMD[GRPC_CMD.index("-m") + 1] == project_config()["module_name"]
    # Helm, the K8sRunLauncher and the EcsRunLauncher replace the CMD: an ENTRYPOINT would be
    # prepended to their dagster commands.
    assert not [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert ("EXPOSE", GRPC_CMD[-1]) in instructions


def test_dockerfile_installs_exactly_the_requirements_file():
    requirements = requirements_path()
    assert requirements == ROOT / "deploy" / "requirements.txt"
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    # The project itself adds nothing: --no-deps, then pip check proves the lock is complete.
    project_install = [r for r in runs if "pip install" in r and "--no-deps" in r]
    assert project_install and "pip check" in project_install[-1]
    assert all("--no-deps" in r or "-r " in r for r in runs if "pip install" in r)
    assert (
        pip_requirements_source("build-requirements.txt")
        == ROOT / "deploy" / "build-requirements.txt"
    )


def test_dockerignore_lets_every_copied_file_through():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # an allowlist: nothing else reaches the build context
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for sources, _ in dockerfile_copies():
        for source in sources:
            assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                source
            )


def test_requirements_pin_every_dependency_of_the_project():
    pins = requirement_pins(requirements_path())
    for name, version in DAGSTER_PINS.items():
        assert pins.get(name) == version, f"{name}: {pins.get(name)} (want {version})"
    assert "export-pipelines" not in pins  # installed from the wheel, --no-deps
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in dependencies:
        requirement = Requirement(line)
        name = canonical(requirement.name)
        assert name in pins, (
            f"{name} is a dependency in pyproject.toml but not in deploy/requirements.txt: "
            "run deploy/update-requirements.sh"
        )
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])


def test_requirements_match_the_tested_environment():
    """The image runs the versions the test suite runs against (.venv)."""
    differing = {}
    for name, version in requirement_pins(requirements_path()).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # deployment-only (dagster-k8s and its dependencies, until pyproject has it)
        if installed != version:
            differing[name] = (version, installed)
    assert not differing, (
        f"deploy/requirements.txt vs this venv: {differing}; run deploy/update-requirements.sh"
    )


# -- the image's environment, built as the Dockerfile builds it (slow) ------------------------------


def _run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, (
        f"{shlex.join(map(str, command))} exited {result.returncode}\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_image_environment_serves_the_code_location(tmp_path):
    """What `docker build` would do, minus Docker: the build context is exactly the Dockerfile's
    COPY sources; the wheel is built with the pinned backend; a fresh venv gets deploy/
    requirements.txt and then the wheel with --no-deps, pip check passes; from an empty working
    directory the installed package imports, `dagster definitions validate` accepts it and the
    image's CMD serves it over gRPC (health-checked as the chart's probes do, then SIGTERM)."""
    assert sys.version_info[:2] == (3, 11), "the image is Python 3.11: run this test on 3.11"
    context = tmp_path / "context"
    for sources, _ in dockerfile_copies():
        for source in sources:
            target = context / source
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(
                    ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                shutil.copy(ROOT / source, target)
    pip_env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORT_", "DAGSTER_"))}

    build = tmp_path / "build-venv"
    _run([sys.executable, "-m", "venv", str(build)], 120)
    build_requirements = context / pip_requirements_source("build-requirements.txt").relative_to(
        ROOT
    )
    _run([build / "bin" / "pip", "install", "-q", "-r", build_requirements], 600, env=pip_env)
    wheels = tmp_path / "wheels"
    _run(
        [build / "bin" / "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", wheels, context],
        600,
        env=pip_env,
    )
    (wheel,) = wheels.glob("export_pipelines-*.whl")

    image = tmp_path / "image-venv"
    _run([sys.executable, "-m", "venv", str(image)], 120)
    pip = [image / "bin" / "python", "-m", "pip"]
    requirements = context / requirements_path().relative_to(ROOT)
    _run(pip + ["install", "-q", "-r", requirements], 1200, env=pip_env)
    _run(pip + ["install", "-q", "--no-deps", wheel], 300, env=pip_env)
    _run(pip + ["check"], 120, env=pip_env)

    workdir, home = tmp_path / "app", tmp_path / "dagster_home"
    workdir.mkdir()
    home.mkdir()
    env = {
        **pip_env,
        "PATH": f"{image / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "DAGSTER_HOME": str(home),
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
    }
    probe = (
        "import importlib.resources as r, export_pipelines, export_pipelines.definitions, "
        "dagster_k8s, dagster_aws.ecs, dagster_aws.s3.compute_log_manager, dagster_postgres\n"
        "print(export_pipelines.__file__)\n"
        "print('\\n'.join(str(p) for p in r.files('export_pipelines').rglob('*') if p.is_file()))"
    )
    result = _run([image / "bin" / "python", "-c", probe], 300, cwd=workdir, env=env)
    installed_file, *files = result.stdout.splitlines()
    assert installed_file.startswith(str(image)), installed_file  # not the work tree's copy
    package = Path(installed_file).parent
    installed = {Path(f).relative_to(package).as_posix() for f in files}
    data_files = {
        p.relative_to(ROOT / "export_pipelines").as_posix()
        for p in (ROOT / "export_pipelines").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert data_files <= installed, f"missing from the image: {sorted(data_files - installed)}"

    module = project_config()["module_name"]
    _run(
        [image / "bin" / "dagster", "definitions", "validate", "-m", module],
        600,
        cwd=workdir,
        env=env,
    )

    port = free_port()
    cmd = dockerfile_cmd()
    cmd[cmd.index("-h") + 1] = "127.0.0.1"  # the image listens on all interfaces; here, loopback
    cmd[cmd.index("-p") + 1] = str(port)
    log = open(tmp_path / "grpc.log", "w")
    server = subprocess.Popen(
        [image / "bin" / cmd[0], *cmd[1:]], cwd=workdir, env=env, stdout=log, stderr=log
    )
    try:
        health = [image / "bin" / "dagster", "api", "grpc-health-check", "-p", str(port)]
        deadline = time.monotonic() + 180
        while True:
            check = subprocess.run(
                health + ["-h", "127.0.0.1"], capture_output=True, text=True, timeout=60, env=env
            )
            if check.returncode == 0:
                break
            assert server.poll() is None, (tmp_path / "grpc.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "grpc.log").read_text()[-3000:]
            time.sleep(1)
        server.send_signal(signal.SIGTERM)  # what Kubernetes and ECS send to stop the container
        assert server.wait(timeout=60) == 0, (tmp_path / "grpc.log").read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
