#!/usr/bin/env bash
# On the GPU machine over a packed .carry/: per-kernel durations (Nsight Compute) of about one
# decode step of a synthetic Llama 3.2 1B; WITH_TESTS=1 / WITH_8B=1 add the GPU tests and an 8B bench.

[ -n "${WITH_TESTS:-}" ] && bash scripts/device-test.sh >/dev/null 2>&1; grep -E "tests passed|Failed" $OUT/ctest-gpu.log 2>/dev/null | head
[ -f .carry/build.tar.gz ] && [ ! -d .carry/build ] && tar -C .carry -xzf .carry/build.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64
B=.carry/build/worker-orcd
$B synth --preset llama3.2-1b --quant q4_k_m --vocab $PWD/.carry/testdata/tokenizer/ggml-vocab-gpt-2.gguf -o /tmp/l1.gguf >/dev/null
timeout 200 ncu --clock-control none --launch-skip 3000 --launch-count 200 --metrics gpu__time_duration.sum --csv $B bench -m /tmp/l1.gguf -p 0 -n 64 -r 1 > $OUT/ncu.csv 2>$OUT/ncu.err
python3 scripts/ncu-summary.py $OUT/ncu.csv
tail -3 $OUT/ncu.err
[ -n "${WITH_8B:-}" ] && VOCABS=$PWD/.carry/testdata/tokenizer timeout 300 bench/run-bench.sh --bin $B --only llama8b-q4km --reps 2 --out $OUT/bench8.md 2>&1 | tail -3
