#!/usr/bin/env bash
# FP32 MiniLM-L6 side by side: ONNX Runtime (../shared/peers/ort_minilm.py) and `fuselage bench`
# on the same machine, in one run, same batch/seq/threads; prints both medians and the ratio.
#
#   scripts/bench-vs-ort.sh [--threads 2] [--runs 50]      (batch 1 and 8, seq 128)
#
# Needs the peers' Python environment: bash ../shared/peers/setup.sh "$PEERS_VENV" (once).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2
RUNS=50
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PEERS_VENV="${PEERS_VENV:-$HOME/.cache/fuselage-peers/venv}"
if [ ! -x "$PEERS_VENV/bin/python" ]; then
  echo "no peers environment at $PEERS_VENV: run bash ../shared/peers/setup.sh $PEERS_VENV" >&2
  exit 1
fi
MODEL="${FUSELAGE_MODELS:-../shared/models}/minilm-l6"
[ -d "$MODEL" ] || MODEL="${FUSELAGE_CACHE:-$HOME/.cache/fuselage}/models/minilm-l6"
cargo build --release --quiet
echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
ORT=$("$PEERS_VENV/bin/python" ../shared/peers/ort_minilm.py --model-dir "$MODEL" --variants fp32 \
  --skip-accuracy --batch 1 8 --seq 128 --threads "$THREADS" --runs "$RUNS" | grep ort_minilm_latency)
printf '%-8s %-6s %12s %12s %8s\n' batch seq "ort ms" "fuselage ms" ratio
for B in 1 8; do
  F=$(RAYON_NUM_THREADS=$THREADS target/release/fuselage bench "$MODEL" --backend cpu --threads "$THREADS" \
      --batch "$B" --seq 128 --runs "$RUNS" --json)
  python3 - "$B" "$ORT" "$F" <<'PY'
import json, sys
b = int(sys.argv[1])
ort = [json.loads(l) for l in sys.argv[2].splitlines() if l.strip()]
o = next(x for x in ort if x["batch"] == b)
f = json.loads(sys.argv[3])
print(f"{b:<8} {128:<6} {o['median_ms']:12.2f} {f['median_ms']:12.2f} {f['median_ms'] / o['median_ms']:8.2f}")
PY
done
