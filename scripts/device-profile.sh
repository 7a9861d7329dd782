#!/usr/bin/env bash
# On the GPU machine over a packed .carry/: per-kernel Nsight Compute figures for about one decode
# step of a synthetic model: duration, DRAM bytes (so GB/s), grid, registers, achieved occupancy,
# instructions; then the warp stall reasons of the first mat-vecs of a layer.
#   PRESET (llama3.2-1b) QUANT (q4_k_m) VOCAB (ggml-vocab-gpt-2.gguf) SKIP (3000) COUNT (200)
#   WITH_TESTS=1 runs the GPU tests first; BIN picks another worker-orcd.
[ -n "${WITH_TESTS:-}" ] && bash scripts/device-test.sh >/dev/null 2>&1; grep -E "tests passed|Failed" $OUT/ctest-gpu.log 2>/dev/null | head
[ -f .carry/build.tar.xz ] && [ ! -d .carry/build ] && tar -C .carry -xJf .carry/build.tar.xz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64
B=${BIN:-.carry/build/worker-orcd}
PRESET=${PRESET:-llama3.2-1b} QUANT=${QUANT:-q4_k_m} VOCAB=${VOCAB:-ggml-vocab-gpt-2.gguf}
M=/tmp/prof-$PRESET-$QUANT.gguf
[ -s $M ] || $B synth --preset $PRESET --quant $QUANT --vocab $PWD/.carry/testdata/tokenizer/$VOCAB -o $M >/dev/null
TAG=$PRESET-$QUANT
METRICS=gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size,launch__block_size,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum
timeout 240 ncu --clock-control none --launch-skip ${SKIP:-3000} --launch-count ${COUNT:-200} --metrics $METRICS --csv \
  $B bench -m $M -p 0 -n 64 -r 1 > $OUT/ncu-$TAG.csv 2>$OUT/ncu-$TAG.err
python3 scripts/ncu-summary.py $OUT/ncu-$TAG.csv
tail -2 $OUT/ncu-$TAG.err
timeout 120 ncu --clock-control none -k regex:matvec --launch-skip ${STALL_SKIP:-200} --launch-count 4 --section WarpStateStats \
  --section SchedulerStats --csv $B bench -m $M -p 0 -n 16 -r 1 > $OUT/stall-$TAG.csv 2>>$OUT/ncu-$TAG.err
python3 scripts/ncu-summary.py --stalls $OUT/stall-$TAG.csv
