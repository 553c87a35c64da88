#!/usr/bin/env python3
"""Refresh the checked-in subset of the ONNX node conformance suite that CI runs
(frontends/tests/fixtures/onnx-node-suite, read by tests/onnx/node_suite.rs).

    python scripts/onnx-suite-subset.py SUITE_DIR FUSELAGE_BIN [OUT_DIR]

SUITE_DIR is made by `python ../shared/peers/onnx_node_suite.py generate SUITE_DIR` (needs the
onnx package; ../shared/peers/setup.sh makes a Python environment with it). Every case is run
through `FUSELAGE_BIN run` exactly as onnx_node_suite.py runs it; the subset is, for each op type
(the first node's), the three smallest cases that pass (each under 60 kB), plus the two smallest
cases of each op type that fuselage reports as unsupported, which the test checks are clean
errors. Each case keeps the generated files (model.onnx, in/*.npy, out/*.npy) and a case.json
with the tolerances and the expected status ("pass" or "error").
"""
import json
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

MAX_BYTES = 60_000


def size(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and "got" not in f.parts)


def run_case(d: Path, binary: str, tmp: Path) -> str:
    meta = json.loads((d / "case.json").read_text())
    args = [binary, "run", str(d / "model.onnx")]
    for f in sorted((d / "in").glob("*.npy")):
        args += ["--input", f"{f.stem}={f}"]
    outs = sorted((d / "out").glob("*.npy"))
    for f in outs:
        args += ["--output", f"{f.stem}={tmp / f.name}"]
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "timeout"
    if "panicked at" in p.stderr:
        return "panic"
    if p.returncode != 0:
        return "error"
    for f in outs:
        g = tmp / f.name
        if not g.exists():
            return "wrong"
        want, got = np.load(f), np.load(g)
        if want.shape != got.shape:
            return "wrong"
        if want.dtype.kind in "fc" or got.dtype.kind in "fc":
            w, g = want.astype(np.float64), got.astype(np.float64)
            if not np.allclose(g, w, rtol=meta["rtol"], atol=meta["atol"], equal_nan=True):
                return "wrong"
        elif not np.array_equal(want, got):
            return "wrong"
    return "pass"


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    suite, binary = Path(sys.argv[1]), sys.argv[2]
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).resolve().parent.parent / (
        "frontends/tests/fixtures/onnx-node-suite"
    )
    by_status = defaultdict(lambda: defaultdict(list))
    counts = defaultdict(int)
    with tempfile.TemporaryDirectory() as t:
        for d in sorted(p for p in suite.iterdir() if (p / "case.json").exists()):
            meta = json.loads((d / "case.json").read_text())
            if not meta.get("ok"):
                continue
            tmp = Path(t) / d.name
            tmp.mkdir()
            status = run_case(d, binary, tmp)
            counts[status] += 1
            by_status[status][meta["op"]].append((size(d), d))
    print(json.dumps(counts))
    if counts["wrong"] or counts["panic"]:
        sys.exit("refusing to refresh the subset while some cases are wrong or panic")
    chosen = []
    for status, per_op, keep in (("pass", by_status["pass"], 3), ("error", by_status["error"], 2)):
        for op, cases in sorted(per_op.items()):
            cases.sort()
            chosen += [(status, d) for sz, d in cases[:keep] if sz < MAX_BYTES]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for status, d in chosen:
        dest = out / d.name
        for sub in ("in", "out"):
            shutil.copytree(d / sub, dest / sub)
        shutil.copy(d / "model.onnx", dest / "model.onnx")
        meta = json.loads((d / "case.json").read_text())
        meta["expect"] = status
        (dest / "case.json").write_text(json.dumps(meta, sort_keys=True) + "\n")
    print(json.dumps({"cases": len(chosen), "dir": str(out), "bytes": size(out)}))


if __name__ == "__main__":
    main()
