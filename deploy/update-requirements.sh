#!/usr/bin/env bash
# Regenerates deploy/requirements.txt, the image's pinned Python environment (Dockerfile), from
# the development venv: every package the project needs at run time, at the version installed in
# .venv (what the test suite ran against), plus the deployment-only packages below; anything not
# in .venv is resolved fresh. Run it after changing pyproject.toml's dependencies, then run
# `pytest export_pipelines_tests/test_deploy.py`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Needed in the image but not (yet) by the project itself: the K8sRunLauncher.
DEPLOY_ONLY=("dagster-k8s==0.29.27")

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

.venv/bin/python -m pip freeze --exclude-editable | grep -v -i -E '^export[-_]pipelines' >"$tmp/constraints.txt"
# Build from a copy: an in-tree build would leave build/ in the work tree.
mkdir "$tmp/src"
cp -r pyproject.toml README.md export_pipelines "$tmp/src/"
.venv/bin/python -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q -c "$tmp/constraints.txt" "$tmp/src" "${DEPLOY_ONLY[@]}"
"$tmp/venv/bin/python" -m pip check

{
  echo "# The image's Python environment: every package pinned. Installed by the Dockerfile and by"
  echo "# export_pipelines_tests/test_deploy.py (the image-environment test), never edited by hand:"
  echo "# regenerate with deploy/update-requirements.sh (versions from .venv, plus ${DEPLOY_ONLY[*]})."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v -i -E '^export[-_]pipelines'
} >deploy/requirements.txt
echo "wrote deploy/requirements.txt ($(grep -c '^[^#]' deploy/requirements.txt) pins)"
