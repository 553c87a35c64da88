#!/usr/bin/env bash
# FP32 MiniLM-L6 side by side: ONNX Runtime (../shared/peers/ort_minilm.py) and `fuselage bench`
# on the same machine, in one run, same batch/seq/threads. The pair is measured REPEAT times,
# alternating (ORT, then fuselage, then ORT again…) so that drift of a shared machine hits both;
# prints every round's medians and ratio, then the median ratio per batch size.
#
#   scripts/bench-vs-ort.sh [--threads 2] [--runs 50] [--repeat 3]      (batch 1 and 8, seq 128)
#
# Needs the peers' Python environment: bash ../shared/peers/setup.sh "$PEERS_VENV" (once).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2
RUNS=50
REPEAT=3
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
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
ROWS=""
for R in $(seq 1 "$REPEAT"); do
  ORT=$("$PEERS_VENV/bin/python" ../shared/peers/ort_minilm.py --model-dir "$MODEL" --variants fp32 \
    --skip-accuracy --batch 1 8 --seq 128 --threads "$THREADS" --runs "$RUNS" | grep ort_minilm_latency)
  for B in 1 8; do
    F=$(RAYON_NUM_THREADS=$THREADS target/release/fuselage bench "$MODEL" --backend cpu --threads "$THREADS" \
        --batch "$B" --seq 128 --runs "$RUNS" --json)
    ROWS+=$(python3 - "$R" "$B" "$ORT" "$F" <<'PY'
import json, sys
r, b = int(sys.argv[1]), int(sys.argv[2])
ort = [json.loads(l) for l in sys.argv[3].splitlines() if l.strip()]
o = next(x for x in ort if x["batch"] == b)
f = json.loads(sys.argv[4])
print(json.dumps({"round": r, "batch": b, "seq": 128, "ort_ms": o["median_ms"], "fuselage_ms": f["median_ms"]}))
PY
)$'\n'
  done
done
python3 - "$ROWS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
print(f"{'round':<6} {'batch':<6} {'seq':<5} {'ort ms':>10} {'fuselage ms':>12} {'ratio':>7}")
for x in rows:
    print(f"{x['round']:<6} {x['batch']:<6} {x['seq']:<5} {x['ort_ms']:10.2f} {x['fuselage_ms']:12.2f} {x['fuselage_ms'] / x['ort_ms']:7.2f}")
for b in sorted({x["batch"] for x in rows}):
    rs = [x["fuselage_ms"] / x["ort_ms"] for x in rows if x["batch"] == b]
    print(f"batch {b} x seq 128: median ratio {statistics.median(rs):.2f} over {len(rs)} rounds "
          f"(min {min(rs):.2f}, max {max(rs):.2f})")
PY
