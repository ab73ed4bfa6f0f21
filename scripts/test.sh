#!/usr/bin/env bash
# The one command that checks everything CI checks: it installs and starts what the tests need
# (git, the Docker engine, busybox-static for test images, Chromium and chromedriver for the
# dashboard's browser test; terraform must be on PATH), then runs
# formatting, clippy, rustdoc and every test with the real engines switched on, and builds the
# deploy image of examples/deploy/ and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

missing=()
command -v git >/dev/null || missing+=(git)
command -v dockerd >/dev/null || missing+=(docker.io)
[ -x /bin/busybox ] || command -v busybox >/dev/null || missing+=(busybox-static)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing ${missing[*]}; install them (sudo apt-get install ${missing[*]}) or run as root" >&2
        exit 1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
    say "starting dockerd"
    mkdir -p target
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: no Docker engine answers and only root can start dockerd here" >&2
        exit 1
    fi
    nohup dockerd >target/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "error: dockerd did not answer within 60s; its log:" >&2
        tail -n 30 target/dockerd.log >&2
        exit 1
    fi
fi

if ! command -v terraform >/dev/null && ! command -v tofu >/dev/null; then
    echo "error: terraform is not on PATH: install Terraform (https://developer.hashicorp.com/terraform/install) or OpenTofu's tofu" >&2
    exit 1
fi

export GITOPS_TEST_DOCKER=1 GITOPS_TEST_TERRAFORM=1 GITOPS_TEST_BROWSER=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

say "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

say "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --no-fail-fast
else
    cargo test --workspace --all-features --no-fail-fast --lib --bins --tests
fi

say "doc-tests"
cargo test --workspace --all-features --doc

# On its own, after the suite: it builds the gitops image from examples/deploy/Dockerfile (a
# release build, about 6 minutes on 2 cores), which would slow the timing-sensitive tests.
say "the deploy image (examples/deploy/Dockerfile, on local base images)"
if cargo nextest --version >/dev/null 2>&1; then
    GITOPS_TEST_DOCKER_IMAGE=1 cargo nextest run --workspace --all-features --test deploy \
        -E 'test(the_image_builds)'
else
    GITOPS_TEST_DOCKER_IMAGE=1 cargo test --workspace --all-features --test deploy the_image_builds
fi
