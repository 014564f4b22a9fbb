#!/usr/bin/env python3
"""Draws one window of a strata Chrome-trace timeline (strata.trace) as an SVG, one row per lane.

usage: scripts/trace_svg.py TRACE.json OUT.svg [--step N]   (N: the "training step N" span to draw; default the last)
Standard library only, so it runs wherever strata builds.
"""
import json
import sys
from html import escape

COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    trace, out = argv[1], argv[2]
    want = int(argv[4]) if len(argv) > 4 and argv[3] == "--step" else None
    events = json.load(open(trace))["traceEvents"]
    lanes = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    spans = [e for e in events if e["ph"] == "X"]
    steps = [e for e in spans if e["name"].startswith("training step ")]
    if not steps:
        sys.exit("no 'training step' span in " + trace)
    step = steps[-1] if want is None else next(s for s in steps if s["name"] == "training step %d" % want)
    t0, t1 = step["ts"], step["ts"] + step["dur"]
    width, row, left = 1400, 26, 250
    scale = (width - left - 20) / (t1 - t0)
    used = sorted(tid for tid in lanes if any(e["tid"] == tid and e["ts"] < t1 and e["ts"] + e["dur"] > t0 for e in spans))
    height = 40 + row * len(used) + 30
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="20" font-size="14">%s: %.1f ms (strata timeline, %s)</text>' % (escape(step["name"]), step["dur"] / 1e3, escape(trace.split("/")[-1]))]
    for i, tid in enumerate(used):
        y = 35 + i * row
        svg.append('<text x="10" y="%d">%s</text>' % (y + 16, escape(lanes[tid])))
        svg.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>' % (left, y + row - 2, width - 20, y + row - 2))
        for e in spans:
            if e["tid"] != tid or e["ts"] >= t1 or e["ts"] + e["dur"] <= t0:
                continue
            x0 = left + (max(e["ts"], t0) - t0) * scale
            x1 = left + (min(e["ts"] + e["dur"], t1) - t0) * scale
            svg.append('<rect x="%.1f" y="%d" width="%.2f" height="%d" fill="%s" fill-opacity="0.75"><title>%s %.2f ms</title></rect>'
                       % (x0, y + 3, max(x1 - x0, 0.6), row - 8, COLORS[tid % len(COLORS)], escape(e["name"]), e["dur"] / 1e3))
    ms = (t1 - t0) / 1e3
    tick = 10 if ms < 200 else 50
    for k in range(0, int(ms) + 1, tick):
        x = left + k * 1e3 * scale
        svg.append('<text x="%.1f" y="%d" fill="#666">%d ms</text>' % (x, height - 8, k))
    svg.append("</svg>")
    open(out, "w").write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main(sys.argv)
