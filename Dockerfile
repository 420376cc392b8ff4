# The export_pipelines image: by default Dagster's gRPC code server for the code location, and
# the image the run launchers start every run in (K8sRunLauncher: Kubernetes Job; EcsRunLauncher:
# ECS task). It also carries dagster-webserver and dagster-daemon, so on ECS one image serves all
# three services (deploy/README.md).
#
#   docker build -t <registry>/export-pipelines:<unique tag> .
#
# Reproducible: the base image is pinned to a patch release, every Python package to a version
# (deploy/requirements.txt, generated from the tested venv by deploy/update-requirements.sh), and
# the project itself is installed with --no-deps, so nothing is resolved at build time.
# export_pipelines_tests/test_deploy.py reads this file and builds the same environment.

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY deploy/build-requirements.txt deploy/build-requirements.txt
RUN pip install --no-cache-dir --disable-pip-version-check -r deploy/build-requirements.txt
COPY pyproject.toml README.md ./
COPY export_pipelines ./export_pipelines
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
        --wheel-dir /wheels .

FROM python:3.11.14-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    EXPORT_DATA_DIR=/opt/dagster/data

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it (deploy/k8s/values.yaml).
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid 10001 --home-dir /opt/dagster --no-create-home \
        --shell /usr/sbin/nologin dagster

COPY deploy/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels && pip check

# DAGSTER_HOME is the Helm chart's default (global.dagsterHome); the chart mounts its own
# dagster.yaml over the ECS one baked in here. The code server itself reads no instance config.
COPY deploy/ecs/dagster.yaml deploy/ecs/workspace.yaml /opt/dagster/dagster_home/
RUN mkdir -p /opt/dagster/app /opt/dagster/data \
    && chown -R 10001:10001 /opt/dagster
WORKDIR /opt/dagster/app
USER 10001:10001

EXPOSE 4000
# CMD, not ENTRYPOINT: the Helm chart (container `args`), the K8sRunLauncher (run pods' `args`)
# and the EcsRunLauncher (`command` override) each replace it with their own dagster command.
CMD ["dagster", "api", "grpc", "-m", "export_pipelines.definitions", "-h", "0.0.0.0", "-p", "4000"]
