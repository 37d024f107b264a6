#!/usr/bin/env python3
# Summarizes an nsys kernel trace of CUDA-graph replays (`nsys profile --cuda-graph-trace=node`, exported with
# `nsys stats -r cuda_gpu_trace -f csv`; scripts/gpu/timeline.sh does both): kernels as they really ran inside the
# graph, overlapped by programmatic launches. Takes STEPS passes (a pass starts with the embedding gather) that end
# SKIP passes before the end of the trace, and prints per (kernel, grid): calls per step, mean duration (which
# includes time spent resident but waiting at griddepcontrol.wait), and mean "exposed" time: from max(its start,
# the end of every kernel before it) to its end, i.e. what it adds to the step. Longest exposed first.
# Usage: timeline_summary.py CSV [STEPS] [SKIP]
import collections
import csv
import re
import sys

path = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
skip = int(sys.argv[3]) if len(sys.argv) > 3 else 0
rows = []
with open(path) as f:
    reader = csv.reader(f)
    header = next(reader)
    col = {name: i for i, name in enumerate(header)}
    start_col = next(i for name, i in col.items() if name.startswith("Start"))
    duration_col = next(i for name, i in col.items() if name.startswith("Duration"))
    grid_cols = [col["GrdX"], col["GrdY"], col["GrdZ"]]
    name_col = col["Name"]
    for r in reader:
        try:
            start, duration = float(r[start_col]), float(r[duration_col])
        except (ValueError, IndexError):
            continue
        # Unquoted names with commas spill into later fields: only the part before the first '(' or '<' matters.
        name = re.sub(r"tachyon::kernels::|<unnamed>::|\(anonymous namespace\)::|fp4_moe_detail::|void ", "", r[name_col])
        name = re.sub(r"[<(].*", "", name)
        rows.append((start, duration, name, "x".join(r[c] for c in grid_cols)))
rows.sort()
starts = [i for i, r in enumerate(rows) if "embedding_gather" in r[2]]
if len(starts) < steps + skip + 1:
    sys.exit(f"only {len(starts)} passes found")
begin, end = starts[-steps - skip - 1], starts[-skip - 1]
totals = collections.defaultdict(lambda: [0, 0.0, 0.0])  # calls, duration, exposed (ns)
covered_until = None
for start, duration, name, grid in rows[begin:end]:
    t = totals[(name, grid)]
    t[0] += 1
    t[1] += duration
    finish = start + duration
    exposed = finish - max(start, covered_until) if covered_until is not None else duration
    t[2] += max(exposed, 0.0)
    covered_until = finish if covered_until is None else max(covered_until, finish)
print(f"step {(rows[end][0] - rows[begin][0]) / steps / 1000:.1f} us (first kernel to first kernel, mean of {steps})")
print(f"{'kernel':44s} {'grid':>12s} {'per step':>8s} {'mean us':>8s} {'exposed us/call':>15s} {'us/step':>8s}")
exposed_sum = 0.0
for (name, grid), (n, d, e) in sorted(totals.items(), key=lambda kv: -kv[1][2]):
    exposed_sum += e
    print(f"{name[:44]:44s} {grid:>12s} {n / steps:8.1f} {d / n / 1000:8.2f} {e / n / 1000:15.2f} {e / steps / 1000:8.1f}")
print(f"sum of exposed {exposed_sum / steps / 1000:.1f} us/step (the rest of the step: no kernel running)")
