#!/usr/bin/env python3
# The hottest SASS lines of an `ncu --page source --print-source sass --csv` profile (scripts/gpu/persistent.sh
# NCU=1 writes one): each line's share of the warp stall samples, its instruction and the stall reasons that
# dominate it, so that "which load does every warp wait on" takes one look.
#   scripts/gpu/ncu_source_top.py ncu-source.csv [TOP]
import csv
import sys


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(path, newline="", errors="replace") as f:
        rows = list(csv.reader(f))
    header_at = next((i for i, r in enumerate(rows) if "Address" in r and "Source" in r), None)
    if header_at is None:
        sys.exit(f"{path}: no header row with 'Address' and 'Source' (not an ncu --page source csv?)")
    header = rows[header_at]
    samples_col = next((i for i, h in enumerate(header) if "Sampling" in h and "All" in h), None)
    if samples_col is None:
        sys.exit(f"{path}: no 'Warp Stall Sampling (All Samples)' column; columns: {header}")
    reason_cols = [i for i, h in enumerate(header) if h.startswith("stall_") and "Not Issued" not in h]
    lines = []
    for r in rows[header_at + 1:]:
        if len(r) != len(header):
            continue
        try:
            samples = float(r[samples_col] or 0)
        except ValueError:
            continue
        lines.append((samples, r))
    total = sum(s for s, _ in lines) or 1.0
    print(f"{len(lines)} SASS lines, {total:.0f} stall samples")
    src_col, addr_col = header.index("Source"), header.index("Address")
    for samples, r in sorted(lines, key=lambda x: -x[0])[:top]:
        reasons = []
        for i in reason_cols:
            try:
                v = float(r[i] or 0)
            except ValueError:
                continue
            if v >= 0.15 * samples and v > 0:
                reasons.append(f"{header[i]}={v:.0f}")
        print(f"{100 * samples / total:5.1f}% {samples:7.0f}  {r[addr_col]:>6}  {r[src_col][:70]:70}  {' '.join(reasons)[:120]}")


if __name__ == "__main__":
    main()
