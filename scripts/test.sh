#!/usr/bin/env bash
# Installs what is missing, builds, fuzzes the GGUF reader for FUZZ_SECONDS (default 60) and
# runs the whole test suite. GPU tests (ctest label `gpu`) skip with a reason where no GPU exists.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh

# libFuzzer harness over the GGUF reader and tokenizer construction (clang, ASan + UBSan). The
# seed is fixed (FUZZ_SEED overrides it) so that a failure here reproduces; longer runs with
# other seeds are how new inputs are explored (README, "Tests").
cmake -S . -B build-fuzz -DWORKER_ORCD_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)"
corpus=build-fuzz/corpus
rm -rf "$corpus" && mkdir -p "$corpus"
build-fuzz/fuzz/make_gguf_seeds "$corpus"
(cd build-fuzz && ./fuzz/fuzz_gguf -max_total_time="${FUZZ_SECONDS:-60}" -max_len=4096 -rss_limit_mb=2048 -seed="${FUZZ_SEED:-1}" \
   -print_final_stats=1 corpus 2>fuzz.log) || { tail -n 60 build-fuzz/fuzz.log; echo "fuzz: FAILED (crash input saved in build-fuzz/)"; exit 1; }
echo "fuzz: $(grep -E 'stat::number_of_executed_units' build-fuzz/fuzz.log | awk '{print $2}') executions, no crash"

cd build
ctest --output-on-failure -j"$(nproc)" "$@"
