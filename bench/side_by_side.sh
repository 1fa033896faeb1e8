#!/usr/bin/env bash
# Side by side on this machine, one configuration after the other: `host bench` (this project,
# through libpix2pix.so) against the reference's PyTorch and ONNX Runtime anchors
# (../shared/reference/bench_torch.py, and bench/torch_batch.py for batch 4). Medians in ms.
#
#   bash bench/side_by_side.sh            # needs ../shared and a Python with torch, onnxruntime
#   PY=/tmp/ref/bin/python N=7 bash bench/side_by_side.sh
#
# Inference is timed with running statistics on both sides (PyTorch's eval mode, which ONNX
# Runtime folds into the convolutions); `host bench --norm-stats batch` times host run's
# default (the input's own statistics). Training: the full pix2pix step (G and D forward and
# backward, both Adam updates), D with ndf = ngf.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
N=${N:-7}
REF=../shared/reference
# What the reference side needs; say what is missing and how to get it, before building anything.
missing=0
if [ ! -f "$REF/bench_torch.py" ]; then
  echo "side_by_side.sh: $REF/bench_torch.py not found. The PyTorch/ONNX Runtime anchors live in ../shared," >&2
  echo "  the reference folder beside this repository (see ../shared/README.md); put it there to compare." >&2
  echo "  Our side alone: target/release/host bench (host bench --help maps its options to the README columns)." >&2
  missing=1
fi
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "side_by_side.sh: no Python at PY=$PY." >&2
  missing=1
elif ! "$PY" -c 'import torch, onnx, onnxruntime' >/dev/null 2>&1; then
  echo "side_by_side.sh: $PY cannot import torch, onnx and onnxruntime. Make a Python that can:" >&2
  echo "  python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch onnx onnxruntime onnxscript safetensors pillow scikit-image" >&2
  missing=1
fi
if [ "$missing" != 0 ]; then
  echo "  then: PY=/tmp/ref/bin/python bash bench/side_by_side.sh" >&2
  exit 2
fi
cargo build --release -p pix2pix -p host >&2
HOST=target/release/host
med() { sed -n "s/^$1 \([0-9.]*\).*/\1/p"; }
printf '%-26s %10s %10s %10s %10s %12s %10s %10s\n' config ours_infer ours_batch torch_infer ort_infer ours/ort ours_train torch_train
row() { # label net ngf size batch train(0|1)
  local label=$1 net=$2 ngf=$3 size=$4 batch=$5 train=$6
  local t=() ; [ "$train" = 1 ] && t=(--train)
  local ours oursb tr ti oi tt
  ours=$($HOST bench --net-g "$net" --ngf "$ngf" --size "$size" --batch "$batch" --iters "$N" --norm-stats running "${t[@]}" 2>/dev/null)
  oursb=$($HOST bench --net-g "$net" --ngf "$ngf" --size "$size" --batch "$batch" --iters "$N" 2>/dev/null | med infer_ms)
  if [ "$batch" = 1 ]; then
    local what=infer,onnx; [ "$train" = 1 ] && what=infer,train,onnx
    tr=$($PY $REF/bench_torch.py --ngf "$ngf" --size "$size" --n "$N" --what $what 2>/dev/null)
  else
    tr=$($PY bench/torch_batch.py --ngf "$ngf" --size "$size" --batch "$batch" --n "$N" 2>/dev/null)
  fi
  ti=$(echo "$tr" | med torch_infer_ms); oi=$(echo "$tr" | med onnxruntime_infer_ms)
  tt=$(echo "$tr" | med torch_train_step_ms); [ -z "$tt" ] && tt=-
  local oi_ms; oi_ms=$(echo "$ours" | med infer_ms)
  local ot; ot=$(echo "$ours" | med train_step_ms); [ -z "$ot" ] && ot=-
  printf '%-26s %10s %10s %10s %10s %12s %10s %10s\n' "$label" "$oi_ms" "$oursb" "$ti" "$oi" \
    "$(awk -v a="$oi_ms" -v b="$oi" 'BEGIN{printf "%.2f", a/b}')" "$ot" "$tt"
}
row "unet_256 ngf64 b1" unet_256 64 256 1 1
row "unet_256 ngf32 b1" unet_256 32 256 1 1
row "unet_128 ngf64 b1" unet_128 64 128 1 1
row "unet_256 ngf64 b4" unet_256 64 256 4 0
