#!/usr/bin/env bash
# Runs worker-orcd's benchmark over the performance table's models on this machine's GPU and writes
# a Markdown table. Synthetic models (real dimensions, random weights) are generated first with
# `worker-orcd synth` unless already present. With --llama-bench PATH, llama.cpp's llama-bench
# runs on the same files in the same run and its figures go beside ours.
#
#   bench/run-bench.sh [--bin build/worker-orcd] [--models DIR] [--out FILE] [--reps N]
#                      [--only NAME[,NAME]] [--depth D] [--llama-bench PATH] [--bench-args "ARGS"]
#
# NAME is one of: qwen05-q4km qwen05-q8 llama1b-q4km llama8b-q4km llama8b-f16.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=build/worker-orcd
MODELS=${TMPDIR:-/tmp}/orcd-bench-models
OUT=bench-results.md
REPS=5
ONLY=""
DEPTH=4096
LLAMA_BENCH=""
BENCH_ARGS=""  # more options for every `worker-orcd bench` (for example --host-sync)
VOCABS=${VOCABS:-../shared/testdata/tokenizer}
while (($#)); do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --depth) DEPTH=$2; shift 2 ;;
    --llama-bench) LLAMA_BENCH=$2; shift 2 ;;
    --bench-args) BENCH_ARGS=$2; shift 2 ;;
    *) echo "run-bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$MODELS"
RAW=$(mktemp -d)

# name preset scheme vocabulary
TABLE=(
  "qwen05-q4km qwen2.5-0.5b q4_k_m qwen2-vocab.gguf"
  "qwen05-q8 qwen2.5-0.5b q8_0 qwen2-vocab.gguf"
  "llama1b-q4km llama3.2-1b q4_k_m ggml-vocab-gpt-2.gguf"
  "llama8b-q4km llama3-8b q4_k_m ggml-vocab-gpt-2.gguf"
  "llama8b-f16 llama3-8b f16 ggml-vocab-gpt-2.gguf"
)

for row in "${TABLE[@]}"; do
  read -r name preset scheme vocab <<<"$row"
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
  file="$MODELS/$name.gguf"
  if [ ! -s "$file" ]; then
    echo "run-bench: generating $file ($preset, $scheme)" >&2
    "$BIN" synth --preset "$preset" --quant "$scheme" --vocab "$VOCABS/$vocab" -o "$file" >&2
  fi
  echo "run-bench: benchmarking $name" >&2
  "$BIN" bench -m "$file" -p 512 -n 128 -d "0,$DEPTH" -r "$REPS" --json $BENCH_ARGS >"$RAW/$name.ours.jsonl"
  if [ -n "$LLAMA_BENCH" ]; then
    "$LLAMA_BENCH" -m "$file" -p 512 -n 128 -fa 1 -r "$REPS" -o json >"$RAW/$name.llama.json" ||
      echo "run-bench: llama-bench failed on $name" >&2
  fi
  echo "$name $preset $scheme" >>"$RAW/order"
done

python3 - "$RAW" "$OUT" <<'PY'
import json, os, sys, datetime
raw, out = sys.argv[1], sys.argv[2]
lines = []
gpu = copy = None
rows = [l.split() for l in open(os.path.join(raw, "order"))] if os.path.exists(os.path.join(raw, "order")) else []
has_llama = any(os.path.exists(os.path.join(raw, f"{n}.llama.json")) for n, _, _ in rows)
# tg GB/s: the bytes a decode step reads (weights, one embedding row where the output matrix
# is separate, K/V) over its time. Floor: the file's weight bytes over the copy
# bandwidth, and tg128 as a share of it.
head = "| model dims | quant | load s | pp512 t/s | tg128 t/s | tg128 @ d | depth loss | tg GB/s (of copy BW) | floor t/s (tg128 of it) | VRAM besides weights + KV |"
sep = "|---|---|---|---|---|---|---|---|---|---|"
if has_llama:
    head += " llama.cpp pp512 | llama.cpp tg128 | tg ratio |"
    sep += "---|---|---|"
lines += [head, sep]
for name, preset, scheme in rows:
    res = [json.loads(l) for l in open(os.path.join(raw, f"{name}.ours.jsonl")) if l.strip()]
    get = lambda test, depth: next((r for r in res if r["test"] == test and r["depth"] == depth), None)
    pp, tg = get("pp512", 0), get("tg128", 0)
    tgd = next((r for r in res if r["test"] == "tg128" and r["depth"] > 0), None)
    gpu, copy = res[0]["gpu"], res[0]["copy_gb_s"]
    f = lambda r: f"{r['tok_s']:.0f} ± {r['tok_s_stddev']:.0f}" if r else "-"
    loss = f"{100 * (1 - tgd['tok_s'] / tg['tok_s']):.1f}%" if tg and tgd else "-"
    bw = f"{tg['gb_s']:.0f} ({100 * tg['bandwidth_fraction']:.0f}%)" if tg else "-"
    floor = copy * 1e9 / res[0]["size_bytes"]
    fl = f"{floor:.0f} ({100 * tg['tok_s'] / floor:.1f}%)" if tg else "-"
    vr = res[0].get("vram_by_purpose", {})
    other = sum(b for k, b in vr.items() if k not in ("weights", "kv_cache"))
    cells = [preset, res[0]["quant"] + f" ({scheme})", f"{res[0]['load_ms'] / 1e3:.2f}", f(pp), f(tg),
             (f(tgd) + f" @ {tgd['depth']}") if tgd else "-", loss, bw, fl, f"{other / 2**20:.1f} MiB (ctx {res[0].get('n_ctx')})"]
    if has_llama:
        lp = lt = None
        path = os.path.join(raw, f"{name}.llama.json")
        if os.path.exists(path):
            for r in json.load(open(path)):
                if r.get("n_prompt") == 512 and r.get("n_gen") == 0: lp = r["avg_ts"]
                if r.get("n_gen") == 128 and r.get("n_prompt") == 0: lt = r["avg_ts"]
        cells += [f"{lp:.0f}" if lp else "-", f"{lt:.0f}" if lt else "-",
                  f"{tg['tok_s'] / lt:.2f}x" if (lt and tg) else "-"]
    lines.append("| " + " | ".join(cells) + " |")
hdr = [f"Benchmark run {datetime.datetime.now().isoformat(timespec='minutes')} on {gpu}, "
       f"device-to-device copy {copy:.0f} GB/s (read + write). Synthetic models, batch 1, "
       "one warm-up then timed runs (mean ± stddev), CUDA events.", ""]
open(out, "w").write("\n".join(hdr + lines) + "\n")
print("\n".join(hdr + lines))
PY
rm -rf "$RAW"
