#!/usr/bin/env python3
# Summarizes an Nsight Compute CSV by kernel name: used by device-profile.sh to see where a decode
# step's time goes. Default: launches, total and mean duration, DRAM GB/s and the mean of every
# other metric per kernel. --stalls: the stall reasons (cycles per issued instruction) per launch.
import collections, csv, sys

stalls = sys.argv[1] == "--stalls"
rows = list(csv.reader(open(sys.argv[-1])))
hdr = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if hdr is None:
    sys.exit("no kernels in " + sys.argv[-1])
h = rows[hdr]
ki, ni, vi, ui, ii = h.index("Kernel Name"), h.index("Metric Name"), h.index("Metric Value"), h.index("Metric Unit"), h.index("ID")

def num(s):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None

if stalls:
    for r in rows[hdr + 1:]:
        v = num(r[vi])
        if v is not None and ("Stall" in r[ni] or "Issued" in r[ni] or "Eligible" in r[ni] or "Active Warps" in r[ni]) and v >= 0.05:
            print(f"{r[ii]:>3} {r[ki].replace('orcd::(anonymous namespace)::', '')[:70]:70s} {r[ni][:55]:55s} {v:8.2f}")
    sys.exit()

launch = collections.defaultdict(dict)  # (id) -> metric -> value
names = {}
for r in rows[hdr + 1:]:
    v = num(r[vi])
    if v is None:
        continue
    if r[ni] == "gpu__time_duration.sum" and r[ui] in ("nsecond", "ns"):
        v /= 1000
    if r[ni] == "gpu__time_duration.sum" and r[ui] in ("msecond", "ms"):
        v *= 1000
    if r[ni] == "dram__bytes_read.sum":
        v *= {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}.get(r[ui], 1)
    launch[r[ii]][r[ni]] = v
    names[r[ii]] = r[ki].replace("orcd::(anonymous namespace)::", "").replace("void ", "")[:110]
agg = collections.defaultdict(list)  # by kernel and grid: the same kernel on different matrices apart
for i, m in launch.items():
    agg[f"{names[i]} grid {m.get('launch__grid_size', 0):.0f}"].append(m)
T = "gpu__time_duration.sum"
total = sum(m.get(T, 0) for m in launch.values())
print(f"total {total:.1f} us over {len(launch)} kernels")
others = sorted({k for m in launch.values() for k in m} - {T, "dram__bytes_read.sum"})
short = {k: (k.split("__")[1] if "__" in k else k).split(".")[0][:14] for k in others}  # section metrics have plain names
print(f"{'us':>9} {'n':>4} {'us/launch':>9} {'GB/s':>6} " + " ".join(f"{short[k]:>14}" for k in others) + "  kernel")
for name, ms in sorted(agg.items(), key=lambda x: -sum(m.get(T, 0) for m in x[1])):
    t = sum(m.get(T, 0) for m in ms)
    gbs = sum(m.get("dram__bytes_read.sum", 0) for m in ms) / (t * 1e3) if t else 0
    means = [sum(m.get(k, 0) for m in ms) / len(ms) for k in others]
    print(f"{t:9.1f} {len(ms):4d} {t / len(ms):9.2f} {gbs:6.0f} " + " ".join(f"{v:14.1f}" for v in means) + f"  {name}")
