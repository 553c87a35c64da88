#!/usr/bin/env bash
# SmolLM2-135M greedy generation side by side: PyTorch eager with its KV cache
# (scripts/generate-vs-torch.py) and `fuselage generate` (KV cache), same prompt, same token
# count, same threads, alternating REPEAT times in one run; prints each round and the median
# decode tokens/s and prompt prefill ms of both, whether the tokens agree, and the time of a
# 128-token forward at batch 1 (PyTorch eager vs `fuselage bench --batch 1 --seq 128`).
#
#   scripts/generate-vs-torch.sh [--threads 2] [--tokens 64] [--repeat 3]
#
# Needs the peers' Python environment: bash ../shared/peers/setup.sh "$PEERS_VENV" (once).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2
TOKENS=64
REPEAT=3
PROMPT="It is a truth universally acknowledged, that a single man in possession of a good fortune"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --prompt) PROMPT=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PEERS_VENV="${PEERS_VENV:-$HOME/.cache/fuselage-peers/venv}"
if [ ! -x "$PEERS_VENV/bin/python" ]; then
  echo "no peers environment at $PEERS_VENV: run bash ../shared/peers/setup.sh $PEERS_VENV" >&2
  exit 1
fi
MODEL="${FUSELAGE_MODELS:-../shared/models}/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$MODEL" ] || MODEL="${FUSELAGE_CACHE:-$HOME/.cache/fuselage}/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
cargo build --release --quiet
echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
ROWS=""
for R in $(seq 1 "$REPEAT"); do
  T=$(OMP_NUM_THREADS=$THREADS "$PEERS_VENV/bin/python" scripts/generate-vs-torch.py --gguf "$MODEL" \
      --prompt "$PROMPT" --max-tokens "$TOKENS" --threads "$THREADS" 2>/dev/null | tail -1)
  F=$(RAYON_NUM_THREADS=$THREADS target/release/fuselage generate "$MODEL" --prompt "$PROMPT" \
      --max-tokens "$TOKENS" --json | tail -1)
  B=$(RAYON_NUM_THREADS=$THREADS target/release/fuselage bench "$MODEL" --backend cpu --threads "$THREADS" \
      --batch 1 --seq 128 --runs 5 --json)
  ROWS+=$(python3 - "$R" "$T" "$F" "$B" <<'PY'
import json, sys
r, t, f, b = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(json.dumps({"round": r, "torch_prefill128_ms": t["prefill128_ms"],
                  "fuselage_prefill128_ms": b["median_ms"],
                  "torch_decode_tokens_per_s": t["decode_tokens_per_s"],
                  "fuselage_decode_tokens_per_s": f["decode_tokens_per_s"],
                  "torch_prefill_ms": t["prefill_ms"], "fuselage_prefill_ms": f["prefill_ms"],
                  "same_tokens": t["tokens"] == f["tokens"]}))
PY
)$'\n'
done
python3 - "$ROWS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
for r in rows:
    print(json.dumps(r))
med = lambda k: statistics.median(r[k] for r in rows)
print(json.dumps({
    "torch_decode_tokens_per_s": med("torch_decode_tokens_per_s"),
    "fuselage_decode_tokens_per_s": med("fuselage_decode_tokens_per_s"),
    "decode_speedup": med("fuselage_decode_tokens_per_s") / med("torch_decode_tokens_per_s"),
    "torch_prefill_ms": med("torch_prefill_ms"),
    "fuselage_prefill_ms": med("fuselage_prefill_ms"),
    "same_tokens": all(r["same_tokens"] for r in rows),
    "torch_prefill128_ms": med("torch_prefill128_ms"),
    "fuselage_prefill128_ms": med("fuselage_prefill128_ms"),
}))
PY
