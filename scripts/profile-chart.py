#!/usr/bin/env python3
"""Draw `fuselage bench --profile --json` results as one SVG of stacked horizontal bars (ms per
run, split by op kind), optionally with reference bars (e.g. ONNX Runtime's median).

  scripts/profile-chart.py OUT.svg "LABEL=bench.json"... [--ref "LABEL=MS"]... [--title T]

Standard library only. Each bar is scaled to the run's median; its segments split that median in
proportion to the per-op times the profile recorded (which add a little clock overhead).
"""
import json
import sys

COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f"]


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    out, bars, title, top = argv[1], [], "ms per run", 6
    args = iter(argv[2:])
    for a in args:
        if a == "--ref":
            label, ms = next(args).split("=", 1)
            bars.append((label, float(ms), None))
        elif a == "--title":
            title = next(args)
        else:
            label, path = a.split("=", 1)
            d = json.load(open(path))
            total = sum(p["seconds"] for p in d["profile"]) or 1.0
            # Kernel instructions are keyed "op [kernel]": one colour per op kind.
            parts = [(p["op"].split(" [", 1)[0], d["median_ms"] * p["seconds"] / total)
                     for p in d["profile"]]
            bars.append((label, d["median_ms"], parts))
    # Legend: the ops that are among the `top` largest anywhere; the rest is "other".
    weight = {}
    for _, _, parts in bars:
        for op, ms in parts or []:
            weight[op] = weight.get(op, 0) + ms
    ops = [op for op, _ in sorted(weight.items(), key=lambda x: -x[1])[:top]]
    color = {op: COLORS[i % len(COLORS)] for i, op in enumerate(ops)}
    color["other"] = "#bab0ac"
    width, left, bar_h, gap = 760, 230, 26, 14
    scale = (width - left - 80) / max(ms for _, ms, _ in bars)
    height = 60 + len(bars) * (bar_h + gap) + 40
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="24" font-size="15" font-weight="bold">{title}</text>']
    y = 44
    for label, ms, parts in bars:
        svg.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7}" text-anchor="end">{label}</text>')
        x = left
        if parts is None:
            svg.append(f'<rect x="{x}" y="{y}" width="{ms * scale:.1f}" height="{bar_h}" fill="#555"/>')
        else:
            merged = {}
            for op, v in parts:
                key = op if op in ops else "other"
                merged[key] = merged.get(key, 0) + v
            for op in ops + ["other"]:
                w = merged.get(op, 0) * scale
                if w <= 0:
                    continue
                svg.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                           f'fill="{color[op]}"><title>{op}: {merged[op]:.2f} ms</title></rect>')
                x += w
        svg.append(f'<text x="{left + ms * scale + 6:.1f}" y="{y + bar_h * 0.7}">{ms:.1f} ms</text>')
        y += bar_h + gap
    lx = left
    for op in ops + ["other"]:
        svg.append(f'<rect x="{lx}" y="{y + 4}" width="12" height="12" fill="{color[op]}"/>')
        svg.append(f'<text x="{lx + 16}" y="{y + 15}">{op}</text>')
        lx += 22 + 8 * len(op) + 12
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main(sys.argv)
