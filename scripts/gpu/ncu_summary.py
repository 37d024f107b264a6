#!/usr/bin/env python3
# Summarizes `ncu --csv --metrics gpu__time_duration.sum ...` output (stdout of the profiled program mixed in is
# skipped): count, mean and total duration per (kernel, grid), longest total first, in ns (ncu reports ns on the
# H100 hosts; us and ms are converted). Usage: scripts/gpu/ncu_summary.py NCU_CSV
import csv, sys, collections, re
rows = list(csv.reader(open(sys.argv[1])))
hdr = None
agg = collections.defaultdict(list)
for r in rows:
    if not hdr:
        if "Kernel Name" in r: hdr = {k: i for i, k in enumerate(r)}
        continue
    if len(r) < len(hdr): continue
    if r[hdr["Metric Name"]] != "gpu__time_duration.sum": continue
    name = r[hdr["Kernel Name"]]
    name = re.sub(r"tachyon::kernels::|\(anonymous namespace\)::|fp4_moe_detail::", "", name)[:110]
    v = float(r[hdr["Metric Value"]].replace(",", ""))
    unit = r[hdr["Metric Unit"]]
    if unit == "usecond": v *= 1000
    elif unit == "msecond": v *= 1e6
    agg[(name, r[hdr["Grid Size"]])].append(v)
tot = 0
for (n, g), vs in sorted(agg.items(), key=lambda kv: -sum(kv[1])):
    tot += sum(vs)
    print(f"{len(vs):5d} x {sum(vs)/len(vs):8.2f} ns = {sum(vs):9.1f}  grid {g:>14}  {n}")
print("total ns", round(tot, 1))
