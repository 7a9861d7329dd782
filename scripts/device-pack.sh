#!/usr/bin/env bash
# Packs what a GPU machine without Debian's libraries needs into .carry/ (git-ignored):
# the built binaries and ctest files, the non-system shared libraries they load, and the
# shared test data. Run after scripts/build.sh; copy .carry to the GPU machine with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .carry && mkdir -p .carry/lib .carry/build/tests .carry/testdata
cp build/worker-orcd build/CTestTestfile.cmake .carry/build/
# GPU-labelled test binaries only (the CPU ones run here and in CI), stripped: the carry is capped at 64 MiB.
cp build/tests/test_*_gpu build/tests/*.cmake build/tests/vram_hog .carry/build/tests/ 2>/dev/null || true
for f in .carry/build/worker-orcd .carry/build/tests/test_*_gpu .carry/build/tests/vram_hog; do strip --strip-unneeded "$f"; done
[ -d build/bench ] && cp -r build/bench .carry/build/ 2>/dev/null || true
for bin in .carry/build/worker-orcd .carry/build/tests/test_*; do
  [ -x "$bin" ] || continue
  ldd "$bin" | awk '/=> \//{print $3}' | grep -E 'libfmt|libspdlog|libpcre2|libcpp-httplib|libtomlplusplus|libbrotli' || true
done | sort -u | xargs -r -I{} cp -L {} .carry/lib/
cp -r ../shared/testdata/models ../shared/testdata/tokenizer .carry/testdata/
# Compressed with xz: the binaries shrink about fivefold (device-test.sh unpacks them).
XZ_OPT="-9 -T2" tar -C .carry -cJf .carry/build.tar.xz build && rm -rf .carry/build
du -sh .carry
