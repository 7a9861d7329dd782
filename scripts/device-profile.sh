#!/usr/bin/env bash
# On the GPU machine over a packed .carry/: per-kernel durations (Nsight Compute) of about one
# decode step of a synthetic Llama 3.2 1B; WITH_TESTS=1 / WITH_8B=1 add the GPU tests and an 8B bench.

[ -n "${WITH_TESTS:-}" ] && bash scripts/device-test.sh >/dev/null 2>&1; grep -E "tests passed|Failed" $OUT/ctest-gpu.log 2>/dev/null | head
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64
B=.carry/build/worker-orcd
$B synth --preset llama3.2-1b --quant q4_k_m --vocab $PWD/.carry/testdata/tokenizer/ggml-vocab-gpt-2.gguf -o /tmp/l1.gguf >/dev/null
timeout 200 ncu --clock-control none --launch-skip 3000 --launch-count 200 --metrics gpu__time_duration.sum --csv $B bench -m /tmp/l1.gguf -p 0 -n 64 -r 1 > $OUT/ncu.csv 2>$OUT/ncu.err
python3 - <<'PY'
import csv, collections, os
rows = list(csv.reader(open(os.environ["OUT"] + "/ncu.csv")))
hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
h = rows[hdr]; ki = h.index("Kernel Name"); vi = h.index("Metric Value"); ui = h.index("Metric Unit")
agg = collections.defaultdict(lambda: [0, 0.0])
for r in rows[hdr + 1:]:
    v = float(r[vi].replace(",", "")); v = v / 1000 if r[ui] in ("nsecond", "ns") else v
    k = r[ki][:90]; agg[k][0] += 1; agg[k][1] += v
tot = sum(a[1] for a in agg.values())
print(f"total {tot:.1f} us over {sum(a[0] for a in agg.values())} kernels")
for k, (n, t) in sorted(agg.items(), key=lambda x: -x[1][1]): print(f"{t:9.1f} us {n:4d}x {t/n:7.2f} us  {k}")
PY
tail -3 $OUT/ncu.err
[ -n "${WITH_8B:-}" ] && VOCABS=$PWD/.carry/testdata/tokenizer timeout 300 bench/run-bench.sh --bin $B --only llama8b-q4km --reps 2 --out $OUT/bench8.md 2>&1 | tail -3
