#!/usr/bin/env bash
# MiniLM-L6 side by side: ONNX Runtime (../shared/peers/ort_minilm.py) and `fuselage bench`
# on the same machine, in one run, same batch/seq/threads. The pair is measured REPEAT times,
# alternating (ORT, then fuselage, then ORT again…) so that drift of a shared machine hits both;
# prints every round's medians and ratio, then the median ratio per batch size.
#
#   scripts/bench-vs-ort.sh [--threads 2] [--runs 50] [--repeat 3] [--int8]  (batch 1 and 8, seq 128)
#
# --int8 adds the INT8 pair: ORT's dynamic quantization with per-channel weights
# (quantize_dynamic, U8S8 kernels) against fuselage's pipelines/hero-w8a8.toml (W8A8, cpu
# preset), both beside their FP32 runs; it prints INT8/FP32 for each and fuselage INT8 / ORT INT8.
#
# Needs the peers' Python environment: bash ../shared/peers/setup.sh "$PEERS_VENV" (once).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2
RUNS=50
REPEAT=3
INT8=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --int8) INT8=1; shift ;;
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
VARIANTS="fp32"
ORT_INT8_FLAGS=""
if [ "$INT8" = 1 ]; then VARIANTS="fp32 int8"; ORT_INT8_FLAGS="--per-channel"; fi
for R in $(seq 1 "$REPEAT"); do
  # shellcheck disable=SC2086
  ORT=$("$PEERS_VENV/bin/python" ../shared/peers/ort_minilm.py --model-dir "$MODEL" --variants $VARIANTS \
    $ORT_INT8_FLAGS --skip-accuracy --batch 1 8 --seq 128 --threads "$THREADS" --runs "$RUNS" | grep ort_minilm_latency)
  for B in 1 8; do
    F=$(RAYON_NUM_THREADS=$THREADS target/release/fuselage bench "$MODEL" --backend cpu --threads "$THREADS" \
        --batch "$B" --seq 128 --runs "$RUNS" --json)
    Q="{}"
    if [ "$INT8" = 1 ]; then
      Q=$(RAYON_NUM_THREADS=$THREADS target/release/fuselage bench "$MODEL" --backend cpu --threads "$THREADS" \
          --pipeline pipelines/hero-w8a8.toml --batch "$B" --seq 128 --runs "$RUNS" --json)
    fi
    ROWS+=$(python3 - "$R" "$B" "$ORT" "$F" "$Q" <<'PY'
import json, sys
r, b = int(sys.argv[1]), int(sys.argv[2])
ort = [json.loads(l) for l in sys.argv[3].splitlines() if l.strip()]
o = next(x for x in ort if x["batch"] == b and x.get("variant", "fp32") == "fp32")
row = {"round": r, "batch": b, "seq": 128, "ort_ms": o["median_ms"],
       "fuselage_ms": json.loads(sys.argv[4])["median_ms"]}
q = json.loads(sys.argv[5])
if q:
    o8 = next(x for x in ort if x["batch"] == b and x.get("variant") == "int8")
    row.update(ort_int8_ms=o8["median_ms"], fuselage_int8_ms=q["median_ms"])
print(json.dumps(row))
PY
)$'\n'
  done
done
python3 - "$ROWS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
int8 = all("ort_int8_ms" in x for x in rows)
head = f"{'round':<6} {'batch':<6} {'seq':<5} {'ort ms':>10} {'fuselage ms':>12} {'ratio':>7}"
if int8:
    head += f" {'ort int8 ms':>12} {'fus. int8 ms':>13} {'fus. int8/fp32':>15} {'fus. int8/ort int8':>19}"
print(head)
for x in rows:
    line = (f"{x['round']:<6} {x['batch']:<6} {x['seq']:<5} {x['ort_ms']:10.2f} "
            f"{x['fuselage_ms']:12.2f} {x['fuselage_ms'] / x['ort_ms']:7.2f}")
    if int8:
        line += (f" {x['ort_int8_ms']:12.2f} {x['fuselage_int8_ms']:13.2f} "
                 f"{x['fuselage_int8_ms'] / x['fuselage_ms']:15.2f} "
                 f"{x['fuselage_int8_ms'] / x['ort_int8_ms']:19.2f}")
    print(line)
for b in sorted({x["batch"] for x in rows}):
    sel = [x for x in rows if x["batch"] == b]
    rs = [x["fuselage_ms"] / x["ort_ms"] for x in sel]
    print(f"batch {b} x seq 128: median ratio {statistics.median(rs):.2f} over {len(rs)} rounds "
          f"(min {min(rs):.2f}, max {max(rs):.2f})")
    if int8:
        own = statistics.median(x["fuselage_int8_ms"] / x["fuselage_ms"] for x in sel)
        vs = statistics.median(x["fuselage_int8_ms"] / x["ort_int8_ms"] for x in sel)
        ort_own = statistics.median(x["ort_int8_ms"] / x["ort_ms"] for x in sel)
        print(f"  INT8: fuselage INT8/FP32 {own:.2f}, ORT INT8/FP32 {ort_own:.2f}, "
              f"fuselage INT8 / ORT INT8 {vs:.2f}")
PY
