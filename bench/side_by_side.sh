#!/usr/bin/env bash
# Side by side on this machine, one configuration after the other: `host bench` (this project,
# through libpix2pix.so) against the reference's PyTorch and ONNX Runtime anchors
# (../shared/reference/bench_torch.py at batch 1, bench/torch_batch.py at batch 4), for unet_256
# at ngf 64 and 32, batch 1 and 4, inference and training. Medians in ms, then our time over
# theirs (below 1: we are faster). Prints the CPU's instruction sets and its measured sgemm
# peak (numpy's BLAS) and its multiply-add peak (the kernels bench) first.
#
#   bash bench/side_by_side.sh            # needs ../shared and a Python with torch, onnxruntime
#   PY=/tmp/ref/bin/python N=7 bash bench/side_by_side.sh
#   NGFS="32" BATCHES="1" bash bench/side_by_side.sh      # a subset
#   ROUNDS=2 bash bench/side_by_side.sh    # every configuration twice, the rounds interleaved
#
# On a shared or virtual machine one slow moment can move a median by 20 %; more rounds, each
# row printed, show the spread (both sides of a row run back to back, so a slow minute mostly
# hits one row, not one side).
#
# Inference is timed with running statistics on both sides (PyTorch's eval mode, which ONNX
# Runtime folds into the convolutions); `ours_batch` is `host bench --norm-stats batch`, host
# run's default (the input's own statistics); `ours_bf16` is `host bench --norm-stats running
# --precision bf16` (AMX or AVX512_BF16 products; f32, and said so, on CPUs without them).
# Training: the full pix2pix step (G and D forward
# and backward, both Adam updates), D with ndf = ngf.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
N=${N:-7}
NGFS=${NGFS:-"64 32"}
BATCHES=${BATCHES:-"1 4"}
ROUNDS=${ROUNDS:-1}
REF=../shared/reference
INSTALL="python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch onnx onnxruntime safetensors pillow scikit-image, then PY=/tmp/ref/bin/python"

if [ ! -f "$REF/bench_torch.py" ] || [ ! -f "$REF/p2p_ref.py" ]; then
  echo "missing: $REF/bench_torch.py and p2p_ref.py (the reference scripts in ../shared, beside the repository): install with a checkout of the shared reference data at $(cd .. && pwd)/shared" >&2
  exit 2
fi
if ! "$PY" -c 'import torch, onnx, onnxruntime, numpy' 2>/dev/null; then
  echo "missing: torch / onnx / onnxruntime / numpy for PY=$PY: install with $INSTALL" >&2
  exit 2
fi

cargo build --release -p pix2pix -p host >&2
HOST=target/release/host

flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
isa=""
for f in avx2 fma avx512f avx512_bf16 amx_bf16; do
  case " $flags " in *" $f "*) isa="$isa $f" ;; esac
done
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//'), $(nproc) threads"
echo "isa:${isa:- (none of avx2 fma avx512f avx512_bf16)} (gemm kernels: $(case "$isa" in *avx512f*) echo avx512f ;; *fma*) echo avx2+fma ;; *) echo scalar ;; esac))"
"$PY" - <<'EOF'
import time, numpy as np
a = np.random.rand(2048, 2048).astype(np.float32); b = np.random.rand(2048, 2048).astype(np.float32)
a @ b
ts = []
for _ in range(5):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
ts.sort()
print(f"sgemm peak (numpy, 2048^3, median of 5): {2 * 2048**3 / ts[2] / 1e9:.0f} GFLOP/s")
EOF
# The multiply-add ceiling itself (numpy's BLAS reached half of it on a Zen 5): the kernels
# bench's register-only FMA loop on every thread.
PIX2PIX_BENCH=peak cargo bench -q -p pix2pix --bench kernels 2>/dev/null | grep '^fma peak' || echo "fma peak: not measured (cargo bench failed)"

LOG=$(mktemp -t side_by_side.XXXXXX.log)
trap 'echo "side_by_side: failed; the benchmarks'"'"' messages are in $LOG" >&2' ERR
med() { sed -n "s/^$1 \([0-9.]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a/b }'; }
dash() { [ -n "$1" ] && echo "$1" || echo -; }
printf '%-22s %10s %10s %10s %10s %10s %9s %9s %9s %10s %10s %9s\n' \
  config ours_infer ours_batch ours_bf16 torch_infer ort_infer ours/ort ours/torch bf16/ort ours_train torch_train ours/torch
row() { # ngf batch
  local ngf=$1 batch=$2
  local ours oursb oursh tr
  ours=$($HOST bench --net-g unet_256 --ngf "$ngf" --size 256 --batch "$batch" --iters "$N" --norm-stats running --train 2>>"$LOG")
  oursb=$($HOST bench --net-g unet_256 --ngf "$ngf" --size 256 --batch "$batch" --iters "$N" 2>>"$LOG" | med infer_ms)
  oursh=$($HOST bench --net-g unet_256 --ngf "$ngf" --size 256 --batch "$batch" --iters "$N" --norm-stats running --precision bf16 2>>"$LOG" | med infer_ms)
  if [ "$batch" = 1 ]; then
    tr=$("$PY" $REF/bench_torch.py --ngf "$ngf" --size 256 --n "$N" --what infer,train,onnx 2>>"$LOG")
  else
    tr=$("$PY" bench/torch_batch.py --ngf "$ngf" --size 256 --batch "$batch" --n "$N" --train 2>>"$LOG")
  fi
  local oi ot ti oxi tt
  oi=$(echo "$ours" | med infer_ms); ot=$(echo "$ours" | med train_step_ms)
  ti=$(echo "$tr" | med torch_infer_ms); oxi=$(echo "$tr" | med onnxruntime_infer_ms)
  tt=$(echo "$tr" | med torch_train_step_ms)
  printf '%-22s %10s %10s %10s %10s %10s %9s %9s %9s %10s %10s %9s\n' "unet_256 ngf$ngf b$batch" \
    "$(dash "$oi")" "$(dash "$oursb")" "$(dash "$oursh")" "$(dash "$ti")" "$(dash "$oxi")" "$(ratio "$oi" "$oxi")" "$(ratio "$oi" "$ti")" "$(ratio "$oursh" "$oxi")" \
    "$(dash "$ot")" "$(dash "$tt")" "$(ratio "$ot" "$tt")"
}
for round in $(seq "$ROUNDS"); do
  for ngf in $NGFS; do
    for batch in $BATCHES; do
      row "$ngf" "$batch"
    done
  done
done
