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

# The alert rules parse and query only metrics the worker exports.
promtool check rules deploy/prometheus-alerts.yml
for m in $(grep -oE 'expr: .*' deploy/prometheus-alerts.yml | grep -oE '[a-z_]+_(total|bytes|percent|paused)\b' | sort -u); do
  grep -rqF "\"$m\"" src/server || { echo "alert rules query $m, which the worker does not export"; exit 1; }
done

# The daemon's tests again under AddressSanitizer + UBSan, then ThreadSanitizer (host code; the
# suppressions file names cpp-httplib, a shared library built without it).
for san in address thread; do
  cmake -S . -B "build-$san" -DWORKER_ORCD_SANITIZE=$san -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "build-$san" -j"$(nproc)" --target test_server
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/server/tsan.supp" ASAN_OPTIONS="detect_leaks=1" \
    "build-$san/tests/test_server" --gtest_brief=1 || { echo "server tests failed under the $san sanitizer"; exit 1; }
  echo "sanitizer: server tests clean under $san"
done

cd build
ctest --output-on-failure -j"$(nproc)" "$@"
