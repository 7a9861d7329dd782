#!/usr/bin/env python3
# Sums an Nsight Compute CSV (gpu__time_duration per kernel) by kernel name: used by
# device-profile.sh to see where a decode step's time goes.
import collections, csv, sys

rows = list(csv.reader(open(sys.argv[1])))
hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
h = rows[hdr]
ki, vi, ui = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
agg = collections.defaultdict(lambda: [0, 0.0])
for r in rows[hdr + 1:]:
    v = float(r[vi].replace(",", ""))
    v = v / 1000 if r[ui] in ("nsecond", "ns") else v
    agg[r[ki][:90]][0] += 1
    agg[r[ki][:90]][1] += v
print(f"total {sum(a[1] for a in agg.values()):.1f} us over {sum(a[0] for a in agg.values())} kernels")
for k, (n, t) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print(f"{t:9.1f} us {n:4d}x {t / n:7.2f} us  {k}")
