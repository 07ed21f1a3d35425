#!/usr/bin/env bash
# tests/fuzz/run.sh [seconds] — builds every importer and file-reader fuzz target and runs each for its share
# of `seconds` (default 60 in total, split evenly). Host code is compiled by clang with libFuzzer + ASan + UBSan (UB aborts), through
# nvcc so that the headers' CUDA code compiles as usual (clang 14 cannot parse CUDA 13's headers itself).
# Environment: NVCC (default /usr/local/cuda/bin/nvcc), FUZZ_CXX (default clang++), FUZZ_BUILD_DIR
# (default build/fuzz under the repository root), FUZZ_ARCH (default sm_80).
# Exit status: non-zero if a build fails or any target finds a crash, leak or UB.
set -euo pipefail
seconds="${1:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
nvcc="${NVCC:-/usr/local/cuda/bin/nvcc}"
cxx="${FUZZ_CXX:-clang++}"
out="${FUZZ_BUILD_DIR:-$root/build/fuzz}"
arch="${FUZZ_ARCH:-sm_80}"
cuda_lib="$(dirname "$(dirname "$nvcc")")/lib64"
targets=(fuzz_gptq fuzz_awq fuzz_compressed_tensors fuzz_bitsandbytes fuzz_gguf fuzz_hqq fuzz_safetensors fuzz_gguf_file)
fixtures="$root/tests/import/fixtures"
# Seed corpora of the file readers: the committed fixtures, oracles left out (read-only second corpus dir).
declare -A seeds=([fuzz_safetensors]="*.safetensors" [fuzz_gguf_file]="*.gguf")
declare -A dicts=([fuzz_safetensors]="$here/safetensors.dict")
mkdir -p "$out"
for t in "${targets[@]}"; do
  if [[ ! -x "$out/$t" || "$here/$t.cu" -nt "$out/$t" || -n "$(find "$root/include/nibble" "$here/fuzz_common.hpp" "$root/examples/files" -newer "$out/$t" -print -quit)" ]]; then
    echo "[fuzz] building $t"
    "$nvcc" -ccbin "$cxx" -std=c++17 -arch="$arch" --expt-relaxed-constexpr -I"$root/include" -g -O1 \
      "-Xcompiler=-fsanitize=fuzzer-no-link\,address\,undefined" -Xcompiler=-fno-sanitize-recover=undefined \
      -c "$here/$t.cu" -o "$out/$t.o"
    "$cxx" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined "$out/$t.o" \
      -L"$cuda_lib" -lcudart -Wl,-rpath,"$cuda_lib" -o "$out/$t"
  fi
done
share=$(( seconds / ${#targets[@]} ))
(( share < 1 )) && share=1
status=0
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus_$t"
  extra=()
  if [[ -n "${seeds[$t]:-}" ]]; then
    rm -rf "$out/seed_$t" && mkdir -p "$out/seed_$t"
    find "$fixtures" -maxdepth 1 -name "${seeds[$t]}" ! -name '*.oracle.*' -exec cp {} "$out/seed_$t/" \;
    extra+=("seed_$t")
  fi
  if [[ -n "${dicts[$t]:-}" ]]; then extra=("-dict=${dicts[$t]}" "${extra[@]}"); fi
  echo "[fuzz] running $t for ${share}s"
  set +e
  (cd "$out" && ASAN_OPTIONS=detect_leaks=1 "./$t" -max_total_time="$share" -print_final_stats=1 \
     "corpus_$t" "${extra[@]}" >"$out/$t.log" 2>&1)
  rc=$?
  set -e
  grep -E "stat::number_of_executed_units" "$out/$t.log" || true
  if [[ $rc -ne 0 ]]; then
    echo "[fuzz] $t FAILED (exit $rc); log: $out/$t.log"
    grep -E -A20 "ERROR|runtime error" "$out/$t.log" | head -40 || true
    status=1
  fi
done
exit $status
