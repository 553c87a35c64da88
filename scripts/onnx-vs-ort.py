#!/usr/bin/env python3
"""Run an ONNX model with ONNX Runtime and with `fuselage run` on the same seeded inputs, for
several bindings of its symbolic dims, and print the largest relative difference per output.

    python scripts/onnx-vs-ort.py MODEL.onnx FUSELAGE_BIN [--bind name=v,name=v ...] [--backend cpu]

Needs onnxruntime and numpy (../shared/peers/setup.sh makes such an environment). Integer inputs
named like token ids get ids in [100, 2000); `*mask*` inputs are ones with the last row's tail
zeroed; other integer inputs are zeros; float inputs are normal(0, 1). Without --bind, symbolic
dims take 1×7 and 3×12 (first symbol × the others).
"""
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    path, binary = sys.argv[1], sys.argv[2]
    extra = []
    if "--backend" in sys.argv:
        extra = ["--backend", sys.argv[sys.argv.index("--backend") + 1]]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    syms = []
    for i in sess.get_inputs():
        for d in i.shape:
            if isinstance(d, str) and d not in syms:
                syms.append(d)
    binds = [
        dict(kv.split("=") for kv in b.split(","))
        for k, b in zip(sys.argv, sys.argv[1:])
        if k == "--bind"
    ]
    if not binds:
        binds = [
            {s: (1 if j == 0 else 7) for j, s in enumerate(syms)},
            {s: (3 if j == 0 else 12) for j, s in enumerate(syms)},
        ]
    rng = np.random.default_rng(0)
    worst = 0.0
    for b in binds:
        feeds = {}
        for i in sess.get_inputs():
            shape = [int(b[d]) if isinstance(d, str) else d for d in i.shape]
            if "int" in i.type:
                if "mask" in i.name:
                    v = np.ones(shape, np.int64)
                    if shape[0] > 1 and len(shape) == 2:
                        v[-1, shape[1] // 2 :] = 0
                elif "type" in i.name or "position" in i.name:
                    v = np.zeros(shape, np.int64)
                else:
                    v = rng.integers(100, 2000, shape).astype(np.int64)
            else:
                v = rng.standard_normal(shape).astype(np.float32)
            feeds[i.name] = v
        outs = sess.run(None, feeds)
        d = tempfile.mkdtemp()
        args = [binary, "run", path, *extra]
        for k, v in feeds.items():
            np.save(f"{d}/in_{k}.npy", v)
            args += ["--input", f"{k}={d}/in_{k}.npy"]
        names = [o.name for o in sess.get_outputs()]
        for j, n in enumerate(names):
            args += ["--output", f"{n}={d}/out_{j}.npy"]
        p = subprocess.run(args, capture_output=True, text=True)
        if p.returncode:
            print(f"{b}: fuselage failed:\n{p.stderr[-2000:]}")
            sys.exit(1)
        for j, (n, o) in enumerate(zip(names, outs)):
            g = np.load(f"{d}/out_{j}.npy")
            scale = max(float(np.abs(o).max()), 1e-12)
            err = float(np.abs(g.astype(np.float64) - o.astype(np.float64)).max()) / scale
            worst = max(worst, err)
            print(f"{b} {n} {list(o.shape)}: max relative difference {err:.2e}")
    print(f"worst {worst:.2e}")


if __name__ == "__main__":
    main()
