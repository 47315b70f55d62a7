#!/usr/bin/env bash
# One command for an accelerator (issue 12): the population section of `tuning`,
# `hypergradient_cost` and `startup` (when registered), each results file named with the
# device (`NAME-gpu.json` on a GPU, see benchmarks/_harness.py), within 8 minutes.
#
#   benchmarks/device.sh            full sizes, results in benchmarks/results/
#   benchmarks/device.sh --quick    small sizes (runs on CPU in a few minutes: CI), results
#                                   in a temporary folder unless --out is given, so that a
#                                   quick run never replaces a committed results file
#   benchmarks/device.sh --out DIR  results in DIR
#
# Each benchmark runs under `timeout` (BENCH_TIMEOUT seconds, default 150 full / 600
# quick); the script exits non-zero if any failed and says which.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
quick=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick="--quick" ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "device.sh: unknown argument '$1' (use --quick, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "$quick" ] && [ -z "$out" ]; then
    out="$(mktemp -d "${TMPDIR:-/tmp}/hypergrad-device-quick.XXXXXX")"
fi
out_args=()
[ -n "$out" ] && out_args=(--out "$out")
limit="${BENCH_TIMEOUT:-$([ -n "$quick" ] && echo 600 || echo 150)}"
python="${PYTHON:-python}"

"$python" - <<'EOF'
import jax
print("device.sh: backend", jax.default_backend(), "devices", jax.devices(), flush=True)
EOF

names=(tuning hypergradient_cost)
# The list first, then grep: `list | grep -q` under pipefail fails whenever grep exits at
# its match before the list is written out (the writer gets SIGPIPE), dropping startup.
listed=$("$python" -m benchmarks list)
if grep -qx startup <<< "$listed"; then
    names+=(startup)
fi

failed=()
for name in "${names[@]}"; do
    echo "device.sh: $name (limit ${limit}s)" >&2
    # The population section alone: the tuning benchmark's other sections are CPU-bound
    # searches (TPE, random) that an accelerator does not change.
    if ! HYPERGRAD_TUNING_SECTIONS=population timeout "$limit" \
        "$python" -m benchmarks run $quick "${out_args[@]}" "$name"; then
        failed+=("$name")
    fi
done
echo "device.sh: ${SECONDS}s in all; results in ${out:-benchmarks/results}" >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "device.sh: failed or timed out: ${failed[*]}" >&2
    exit 1
fi
