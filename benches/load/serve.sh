#!/usr/bin/env bash
# Load test of `gitops serve --no-run` with wrk: signed GitHub push deliveries (each with its own
# delivery id), side by side with the floor, a bare axum handler that only checks the HMAC and
# answers 202 (`webhook-floor`), at 1, 64 and 256 connections. Afterwards every delivery serve
# answered 202 must be in its inbox: the script counts them.
#
#   benches/load/serve.sh            # DURATION=10s CONNECTIONS="1 64 256" ROUNDS=3 by default
#
# Each connection count is measured ROUNDS times, floor and serve alternating, and the median
# of the rounds' ratios is the figure (one 10 s run of the floor alone varies by a quarter on a
# 2-core machine that also runs wrk).
#
# Installs wrk with apt-get when it is missing. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-1 64 256}
ROUNDS=${ROUNDS:-3}
FIXTURE=${FIXTURE:-../shared/fixtures/webhooks/github/push.with-new-branch.json}
SECRET=load-test-secret
if ! command -v wrk >/dev/null; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --quiet -p gitops-examples --bin gitops -p gitops-benches --bin webhook-floor
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
signature="sha256=$(openssl dgst -sha256 -hmac "$SECRET" -r "$FIXTURE" | cut -d' ' -f1)"
git init -q "$tmp/repo"

# wrk against http://$addr; prints the RESULT line.
load() {
    local connections=$1 prefix=$2 threads=2
    [ "$connections" -lt 2 ] && threads=1
    wrk -t"$threads" -c"$connections" -d"$DURATION" -s benches/load/deliveries.lua \
        "http://$addr" -- "$FIXTURE" "$signature" "$prefix" | grep '^RESULT'
}

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }

start "$tmp/floor.log" target/release/webhook-floor 127.0.0.1:0 "$SECRET"
floor_addr=$addr
SECRET_VALUE=$SECRET start "$tmp/serve.log" env "HOOK_SECRET=$SECRET" target/release/gitops serve \
    --listen 127.0.0.1:0 --repo "$tmp/repo" --state "$tmp/state" --no-run \
    --github-secret-env HOOK_SECRET --repo-name Codertocat/Hello-World --replay-window 0s
serve_addr=$addr

echo "| connections | round | floor deliveries/s | floor p50 / p99 ms | serve deliveries/s | serve p50 / p99 ms | serve/floor | errors (floor, serve) |"
echo "|---|---|---|---|---|---|---|---|"
served=0
medians=()
for c in $CONNECTIONS; do
    ratios=()
    for round in $(seq "$ROUNDS"); do
        addr=$floor_addr
        f=$(load "$c" "floor-$c-$round")
        addr=$serve_addr
        s=$(load "$c" "serve-$c-$round")
        served=$((served + $(field requests "$s")))
        ratio=$(python3 -c "print(f'{$(field rps "$s") / $(field rps "$f"):.2f}')")
        ratios+=("$ratio")
        ferr=$(( $(field not_202 "$f") + $(field socket_errors "$f") ))
        serr=$(( $(field not_202 "$s") + $(field socket_errors "$s") ))
        echo "| $c | $round | $(field rps "$f") | $(field p50_ms "$f") / $(field p99_ms "$f") | $(field rps "$s") | $(field p50_ms "$s") / $(field p99_ms "$s") | $ratio | $ferr, $serr |"
    done
    medians+=("$c: $(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (ROUNDS + 1) / 2 ))p")x")
done
echo
echo "median serve/floor by connections: ${medians[*]}"
sleep 1
stored=$(sqlite3 "$tmp/state/ledger.sqlite3" "SELECT COUNT(*) FROM inbox")
echo
echo "serve answered $served deliveries that wrk counted; its inbox holds $stored (requests in flight when wrk stopped are stored but not counted)."
if [ "$stored" -lt "$served" ]; then
    echo "serve.sh: LOST deliveries: $served answered, $stored stored" >&2
    exit 1
fi
