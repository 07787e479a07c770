#!/usr/bin/env bash
# Runs every test of Skein. Installs what it needs first, so it works on a
# fresh clone of a machine with only the package registries reachable.
#   SKEIN_SKIP_UI=1   skip the UI bundle check and browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v protoc >/dev/null 2>&1 || true   # not needed: protos come pre-generated in opentelemetry-proto
if [ -z "${SKEIN_SKIP_UI:-}" ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  step "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

step "rustfmt"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked 2>&1 | tee /tmp/skein-cargo-test.log

if [ -z "${SKEIN_SKIP_UI:-}" ] && [ -f ui/build.sh ]; then
  step "UI bundle is up to date"
  bash ui/build.sh
  if ! git diff --quiet -- ui/dist || [ -n "$(git ls-files --others --exclude-standard ui/dist)" ]; then
    git status --short ui/dist
    echo "ui/dist differs from a fresh build of ui/web: run 'bash ui/build.sh' and commit ui/dist" >&2
    exit 1
  fi
  if [ -f ui/e2e/run.mjs ]; then
    step "UI browser tests (headless Chromium)"
    python3 -m pip install -q opentelemetry-proto protobuf zstandard
    SKEIN_BIN="$root/target/debug/skein" node ui/e2e/run.mjs
  fi
fi
