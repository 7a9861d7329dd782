#!/usr/bin/env bash
# Installs what is missing, builds, fuzzes the GGUF reader and the request parsers, and
# runs the whole test suite. GPU tests (ctest label `gpu`) skip with a reason where no GPU exists.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh

# libFuzzer harnesses (clang, ASan + UBSan): the GGUF reader with tokenizer construction for
# FUZZ_SECONDS (default 60), the request parsers for half that. The seed is fixed (FUZZ_SEED
# overrides it) so that a failure here reproduces; longer runs with other seeds are how new
# inputs are explored (README, "Tests").
cmake -S . -B build-fuzz -DWORKER_ORCD_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)"
rm -rf build-fuzz/corpus build-fuzz/api-corpus && mkdir -p build-fuzz/corpus build-fuzz/api-corpus
build-fuzz/fuzz/make_gguf_seeds build-fuzz/corpus
cp fuzz/api-seeds/* build-fuzz/api-corpus/
fuzz() {  # harness corpus seconds
  (cd build-fuzz && "./fuzz/$1" -max_total_time="$3" -max_len=4096 -rss_limit_mb=2048 -seed="${FUZZ_SEED:-1}" \
     -print_final_stats=1 "$2" 2>"$1.log") || { tail -n 60 "build-fuzz/$1.log"; echo "fuzz: $1 FAILED (crash input saved in build-fuzz/)"; exit 1; }
  echo "fuzz: $1 $(grep -E 'stat::number_of_executed_units' "build-fuzz/$1.log" | awk '{print $2}') executions, no crash"
}
fuzz fuzz_gguf corpus "${FUZZ_SECONDS:-60}"
fuzz fuzz_api api-corpus "$(( ${FUZZ_SECONDS:-60} / 2 ))"

cd build
ctest --output-on-failure -j"$(nproc)" "$@"
