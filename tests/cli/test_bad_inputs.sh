#!/usr/bin/env bash
# Bad-input smoke set for the `shareprefill` program (issue 18): every case must exit non-zero
# with a message that names the problem (checked by substring), never crash, hang or exit 0 with
# a lost or wrong result. Cases that need the default model are skipped when it is not cached.
# Usage: tests/cli/test_bad_inputs.sh path/to/shareprefill   (CTest runs it, label quick; also
# part of scripts/sanitize.sh under ASan/UBSan).
set -u
bin=${1:?usage: test_bad_inputs.sh SHAREPREFILL_BINARY}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
cases=0

# expect_error SUBSTRING ARGS...: non-zero exit (not a signal), SUBSTRING in stderr.
expect_error() {
  local want=$1
  shift
  cases=$((cases + 1))
  timeout 120 "$bin" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [[ $rc -eq 0 || $rc -ge 124 ]] || ! grep -qF -- "$want" "$work/err"; then
    echo "FAIL (rc $rc): shareprefill $* -- wanted: $want"
    sed 's/^/    /' "$work/err" | tail -5
    failures=$((failures + 1))
  fi
}

# Little-endian safetensors file: 8-byte header length, the header (text, or @FILE), then $3
# zero bytes.
safetensors() {
  local path=$1 header=$2 data=${3:-0}
  python3 - "$path" "$header" "$data" <<'PY'
import struct, sys
path, header, data = sys.argv[1], sys.argv[2], int(sys.argv[3])
header = open(header[1:]).read().strip() if header.startswith("@") else header
header = header.encode()
open(path, "wb").write(struct.pack("<Q", len(header)) + header + bytes(data))
PY
}

# --- command line -------------------------------------------------------------------------
expect_error "unknown subcommand 'genrate'" genrate --prompt-file x
expect_error "unknown subcommand 'perplexity' of 'eval'" eval perplexity
expect_error "--threads: Value -3 not in range" plan --synthetic --threads -3
expect_error "--threads: Value 100000 not in range" plan --synthetic --threads 100000
expect_error "--seed: Value -1 is not an integer" plan --synthetic --seed -1
expect_error "--seed: Value 99999999999999999999 is not an integer" generate --prompt-file x --seed 99999999999999999999
expect_error "--rope-factor: Value inf is not a finite number" generate --prompt-file x --rope-factor inf
expect_error "--rope-factor: Value nan is not a finite number" eval ppl --texts x --rope-factor nan
expect_error "--rope-scaling: " generate --prompt-file x --rope-scaling fast
expect_error "--max-new: Value 1e23 not in range" generate --prompt-file x --max-new 1e23
expect_error "--max-new: Value 0 not in range" eval needle --haystack x --needles y --max-new 0
expect_error "--sample-rows: Value -1 not in range" bench attention --sample-rows -1
expect_error "--compare-positions: Value 0 not in range" demo --compare-positions 0
expect_error "--compare-positions: Value -3 not in range" demo --compare-positions -3
expect_error "block_size must be a power of two in [16, 4096], got 1099511627776" plan --synthetic --n 64 --layers 1 --block-size 1099511627776
expect_error "gamma must be in (0, 1], got 7" plan --synthetic --n 64 --layers 1 --mode dense --gamma 7
expect_error "--inputs excludes --n" plan --inputs x.safetensors --n 5
expect_error "--synthetic excludes --inputs" plan --inputs x.safetensors --synthetic
expect_error "--texts and --capture both given" calibrate --texts a.txt --capture c.bin --out m.json
expect_error "n_tokens must be in [1, 2^24]" plan --synthetic --n 99999999999999999999
expect_error "heads 100000000 must be a multiple" plan --synthetic --n 64 --layers 1 --heads 100000000

# --device (issue 14): cpu or cuda; cuda without a usable GPU is refused before any work.
expect_error "--device: tpu not in {cpu,cuda}" generate --prompt-file x --device tpu
expect_error "--device: gpu not in {cpu,cuda}" eval ppl --texts x --device gpu
expect_error "--chunk must be a multiple of 128 (0: whole windows), got 100" eval ppl --texts x \
  --device cpu --chunk 100
expect_error "--chunk-state: cached not in {fresh,carried}" eval ppl --texts x --chunk-state cached
expect_error "--device: cpu not in {cuda}" bench prefill --device cpu
if ! nvidia-smi -L >/dev/null 2>&1; then
  for args in "generate --prompt-file x" "demo" "eval ppl --texts x" "bench prefill" \
      "eval needle --haystack x --needles y"; do
    # shellcheck disable=SC2086
    expect_error "[--device] cuda was requested but no usable CUDA GPU is present" $args --device cuda
  done
fi

# --- dense mode ignores planner options: a warning, and the run goes on ------------------------
cases=$((cases + 1))
if ! timeout 120 "$bin" plan --synthetic --n 128 --layers 1 --heads 2 --kv-heads 1 --dim 16 \
    --mode dense --gamma 0.5 >"$work/out" 2>"$work/err" ||
    ! grep -qF "warning: --gamma has no effect with --mode dense" "$work/err"; then
  echo "FAIL: plan --mode dense --gamma 0.5 should run and warn"
  failures=$((failures + 1))
fi

# --- files ----------------------------------------------------------------------------------
expect_error "'$work' is a directory, not a file" plan --inputs "$work"
expect_error "'$work' is a directory, not a file" generate --prompt-file "$work"
expect_error "'$work' is a directory, not a file" plan --synthetic --n 64 --layers 1 --clusters "$work"
expect_error "'$work' is a directory, not a file" calibrate --capture "$work" --out "$work/m.json"
safetensors "$work/wild.st" '{"layer0.q": {"dtype": "F32", "shape": [1], "data_offsets": [9223372036854775800, 9223372036854775804]}}' 16
expect_error "outside the data section" plan --inputs "$work/wild.st"
safetensors "$work/count.st" '{"layer0.q": {"dtype": "F32", "shape": [4611686018427387904, 4, 4], "data_offsets": [0, 0]}}' 0
expect_error "overflows int64" plan --inputs "$work/count.st"
python3 -c "print('{\"layer0.q\": {\"shape\": [1], \"data_offsets\": [0, 4], \"dtype\": ' + '[' * 200000 + ']' * 200000 + '}}')" >"$work/deep.json"
safetensors "$work/deep.st" "@$work/deep.json" 4
expect_error "unsupported dtype [...]" plan --inputs "$work/deep.st"
python3 -c "print('{\"clusters\": {\"a\": ' + '[' * 200000 + ']' * 200000 + '}, \"shared_clusters\": []}')" >"$work/deep_map.json"
expect_error "nested more than 64 levels deep" plan --synthetic --n 64 --layers 1 --clusters "$work/deep_map.json"
printf '{"clusters": {"a": [[0, 0]]}, "shared_clusters": []}\ngarbage' >"$work/trailing.json"
expect_error "not valid JSON" plan --synthetic --n 64 --layers 1 --clusters "$work/trailing.json"
python3 - "$work/big.bin" <<'PY'
import struct, sys
# A 65-byte capture claiming one input of 65535 x 65535 block attention values.
b = b"SPCALIB1" + struct.pack("<qq", 1, 0) + struct.pack("<qqqqq", 65535 * 128, 128, 65535, 1, 1)
open(sys.argv[1], "wb").write(b + b"\0")
PY
expect_error "claims 4294836225 floats but only 1 bytes are left" calibrate --capture "$work/big.bin" --out "$work/m.json"

python3 - "$work/huge_q.st" <<'PY'
import json, struct, sys
# Finite but huge q (3e38): the scores overflow fp32; the output must not be reported as exact.
n, heads, kv, dim = 256, 2, 1, 16
tensors = {"layer0.q": ([n, heads, dim], 3e38), "layer0.k": ([n, kv, dim], 1.0),
           "layer0.v": ([n, kv, dim], 1.0)}
header, data = {}, b""
for name, (shape, value) in tensors.items():
    count = shape[0] * shape[1] * shape[2]
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + 4 * count]}
    data += struct.pack("<%df" % count, *([value] * count))
h = json.dumps(header).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
expect_error "attention output is not finite at token 0 (the scores overflow fp32" plan --inputs "$work/huge_q.st" --mode vslash

# --- output failures ----------------------------------------------------------------------
small_plan=(plan --synthetic --n 128 --layers 1 --heads 2 --kv-heads 1 --dim 16)
cases=$((cases + 1))
if timeout 120 "$bin" "${small_plan[@]}" >/dev/full 2>"$work/err" ||
    ! grep -qF "writing to standard output failed" "$work/err"; then
  echo "FAIL: stdout on /dev/full must exit non-zero"
  failures=$((failures + 1))
fi
expect_error "writing to '/dev/full' failed" "${small_plan[@]}" --json /dev/full
cases=$((cases + 1))
if timeout 120 "$bin" "${small_plan[@]}" >&- 2>"$work/err" ||
    ! grep -qF "standard output is closed" "$work/err"; then
  echo "FAIL: a closed stdout must exit non-zero"
  failures=$((failures + 1))
fi

# --- with the default model ---------------------------------------------------------------
model=${SP_CACHE:-$HOME/.cache/shareprefill}/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ -f $model ]]; then
  printf 'The quick brown fox.' >"$work/prompt.txt"
  expect_error "plus --max-new 9000 exceed the model's trained context of 8192 tokens" \
    generate --prompt-file "$work/prompt.txt" --max-new 9000 --threads 2
  head -c 1000000 /dev/zero | tr '\0' 'a' | sed 's/aaaaaaaaaa/a b c d e /g' >"$work/huge.txt"
  expect_error "tokens exceed the model's trained context of 8192 tokens: shorten it" generate --prompt-file "$work/huge.txt" --max-new 1 --threads 2
  expect_error "has only 5 tokens, fewer than --tokens 64" inspect --prompt-file "$work/prompt.txt" \
    --tokens 64 --layer 0 --head 0 --png "$work/x.png" --threads 2
  # Progress into a file: one complete line per layer, no carriage returns.
  cases=$((cases + 1))
  if ! timeout 300 "$bin" generate --prompt-file "$work/prompt.txt" --max-new 2 --threads 2 \
      >"$work/out" 2>"$work/err" || grep -q $'\r' "$work/err" ||
      [[ $(grep -c "^prefill \[dense\]: layer [0-9]*/30$" "$work/err") -ne 30 ]]; then
    echo "FAIL: progress to a file must be 30 plain lines"
    failures=$((failures + 1))
  fi
else
  echo "skipped the model cases: $model not cached"
fi

echo "$cases cases, $failures failures"
[[ $failures -eq 0 ]]
