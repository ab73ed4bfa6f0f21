#!/usr/bin/env bash
# Runs each fuzz target (fuzz/) for SECONDS seconds (default 120). Needs cargo-fuzz
# (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets the stable toolchain build the sanitizer.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-120}"
for target in config webhook webhook_bitbucket webhook_gitea expr policy templated; do
    mkdir -p "corpus/$target"
    echo "== fuzzing $target for ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$seconds" -max_len=65536
done
