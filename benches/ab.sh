#!/usr/bin/env bash
# A/B of scheduler cells: each cell in a fresh process, as `compare` runs it, the variants
# taking turns round after round, so that the machine's drift reaches them alike; prints each
# variant's median and spread of µs per stage.
#
#   benches/ab.sh ROUNDS SHAPE N LABEL=BINARY:IMPL ...
#
# BINARY is a `compare` binary (copy target/release/compare aside before rebuilding), IMPL one
# of its implementations. For example, a change against `minimal` and the code before it:
#
#   cp target/release/compare /tmp/before   # then make the change and rebuild
#   benches/ab.sh 15 chain 100000 min=/tmp/before:minimal before=/tmp/before:gitops \
#       after=target/release/compare:gitops
set -euo pipefail

if [ $# -lt 4 ]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
rounds=$1 shape=$2 n=$3
shift 3
declare -A times
for _ in $(seq "$rounds"); do
    for spec in "$@"; do
        label=${spec%%=*} rest=${spec#*=}
        binary=${rest%%:*} impl=${rest#*:}
        line=$("$binary" --cell scheduler "$impl" "$shape" "$n" --quick)
        per_stage=$(sed -n 's/.*"per_stage_us":\([0-9.eE+-]*\).*/\1/p' <<<"$line")
        if [ -z "$per_stage" ]; then
            echo "ab: $label: no per_stage_us in: $line" >&2
            exit 1
        fi
        times[$label]+=" $per_stage"
    done
done
for spec in "$@"; do
    label=${spec%%=*}
    tr ' ' '\n' <<<"${times[$label]}" | grep . | sort -g | awk -v label="$label" '
        { v[NR] = $1 }
        END {
            median = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%-12s median %.3f  min %.3f  max %.3f  (%d runs)\n", label, median, v[1], v[NR], NR
        }'
done
