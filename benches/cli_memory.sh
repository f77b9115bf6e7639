#!/usr/bin/env bash
# Peak memory of `shears prune --scope global --sparsity 0.9` on a 50M-parameter f32 checkpoint,
# against the checkpoint's size. Usage: benches/cli_memory.sh [NUM_PARAMS] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000000}
dir=${2:-$(mktemp -d)}
cargo build --release --features cli --bin shears --example synthetic_checkpoint
target/release/examples/synthetic_checkpoint "$dir/model.safetensors" "$n"
size=$(stat -c %s "$dir/model.safetensors")
/usr/bin/time -v target/release/shears prune "$dir/model.safetensors" --out "$dir/pruned.safetensors" \
    --masks "$dir/masks.safetensors" --scope global --sparsity 0.9 2> "$dir/time.log" >/dev/null
peak_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$dir/time.log")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$dir/time.log")
awk -v size="$size" -v peak="$peak_kb" -v wall="$wall" 'BEGIN {
    printf "checkpoint: %.1f MB\npeak RSS:   %.1f MB\nratio:      %.2f x the checkpoint\nwall time:  %s\n",
        size / 1e6, peak * 1024 / 1e6, peak * 1024 / size, wall }'
target/release/shears inspect "$dir/pruned.safetensors" | tail -1
rm -f "$dir"/*.safetensors
