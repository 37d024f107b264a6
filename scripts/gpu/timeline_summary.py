#!/usr/bin/env python3
# Summarizes an nsys kernel trace of CUDA-graph replays (`nsys profile --cuda-graph-trace=node`, exported with
# `nsys stats -r cuda_gpu_trace -f csv`): kernels as they really ran inside the graph, overlapped by programmatic
# launches. Takes the last STEPS replays (a replay starts with KERNEL_RE, default the embedding gather), and per
# kernel name prints count per step, mean duration, and mean "exposed" time: from max(its start, the previous
# kernel's end) to its end, i.e. what it adds to the step beyond the kernels before it. Side-stream kernels
# (l2_prefetch) are listed but not counted as exposed. SKIP: passes at the end of the trace to leave out (`tachyon
# bench --steps 8 --repeats 1` ends with 8 graph steps, 8 stream-launched steps and one 16-token pass: SKIP 9).
# Usage: timeline_summary.py CSV [STEPS] [SKIP] [KERNEL_RE]
import csv, sys, re, collections
path = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
skip = int(sys.argv[3]) if len(sys.argv) > 3 else 0
first_re = re.compile(sys.argv[4] if len(sys.argv) > 4 else "embedding_gather")
rows = []
with open(path) as f:
    lines = [l for l in f if l.count(",") >= 3]
reader = csv.reader(lines)
hdr = None
for r in reader:
    if hdr is None:
        if any("Start" in c for c in r) and any("Name" in c for c in r):
            hdr = {k: i for i, k in enumerate(r)}
        continue
    try:
        start = float(r[hdr[[k for k in hdr if k.startswith("Start")][0]]])
        dur = float(r[hdr[[k for k in hdr if k.startswith("Duration")][0]]])
    except (ValueError, IndexError):
        continue
    name = r[hdr["Name"]]
    name = re.sub(r"tachyon::kernels::|<unnamed>::|\(anonymous namespace\)::|fp4_moe_detail::|void ", "", name)
    name = re.sub(r"<.*", "", name)[:70]
    rows.append((start, dur, name))
rows.sort()
starts = [i for i, r in enumerate(rows) if first_re.search(r[2])]
if len(starts) < steps + skip + 1:
    sys.exit(f"only {len(starts)} passes found")
begin, end = starts[-steps - skip - 1], starts[-skip - 1]
agg = collections.defaultdict(lambda: [0, 0.0, 0.0])
prev_end = None
for start, dur, name in rows[begin:end]:
    a = agg[name]
    a[0] += 1
    a[1] += dur
    if "l2_prefetch" in name:
        continue
    exposed = start + dur - (max(start, prev_end) if prev_end is not None else start)
    a[2] += max(exposed, 0.0)
    prev_end = start + dur if prev_end is None else max(prev_end, start + dur)
step_ns = (rows[end][0] - rows[begin][0]) / steps
print(f"step {step_ns / 1000:.1f} us (wall, first kernel to first kernel, mean of {steps})")
print(f"{'kernel':70s} {'n/step':>7s} {'mean us':>8s} {'exposed us/step':>16s}")
total = 0.0
for name, (n, d, e) in sorted(agg.items(), key=lambda kv: -kv[1][2]):
    total += e
    print(f"{name:70s} {n / steps:7.1f} {d / n / 1000:8.2f} {e / steps / 1000:16.1f}")
print(f"sum of exposed {total / steps / 1000:.1f} us/step (the rest: gaps with no kernel running)")
