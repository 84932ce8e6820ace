#!/usr/bin/env bash
# One GPU (H100/H200), in one short run: (a) the quickstart config trained end to end on real data, (b) ResNet-50 at
# 224 px, bfloat16, batch 256 on real data with augmentation, end to end on both data paths beside its synthetic
# step, (c) the cost of --xla_gpu_deterministic_ops; then ResNet-50's step beside PyTorch and the zoo's speeds for
# cost estimates. Writes JSON lines to $OUT (default bench_out/) and prints Markdown tables.
#
#   MANUAL_DIR=../shared/data/chest_xray bash experiments/bench/gpu.sh
#   SIZE=32 BATCH=8 ZOO_BATCH=4 RUN_STEPS=4 QUICK_STEPS=4 E2E_SIZE=64 E2E_BATCH=16 \
#       MANUAL_DIR=../shared/data/chest_xray bash experiments/bench/gpu.sh    # a smoke run, on a CPU too
#
# Needs jax with CUDA, flax, optax, orbax-checkpoint, h5py; PyTorch (with CUDA) for the peer row, if installed.
# Reference: the Flax ImageNet example reports about 1,030 images/s per V100 for ResNet-50 in mixed precision.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench_out}
SIZE=${SIZE:-224}
BATCH=${BATCH:-256}
ZOO_BATCH=${ZOO_BATCH:-64}
PY=${PYTHON:-python3}
RUN_STEPS=${RUN_STEPS:-300}     # steps of the ResNet-50 end-to-end runs
QUICK_STEPS=${QUICK_STEPS:-0}   # steps of the quickstart run; 0: its config's 15 epochs
E2E_SIZE=${E2E_SIZE:-224}
E2E_BATCH=${E2E_BATCH:-256}
DATA=(--config.data.manual_dir="${MANUAL_DIR:?set MANUAL_DIR to the chest_xray folder}" ${DATA_DIR:+--config.data.data_dir=$DATA_DIR})
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null
$PY -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'

echo '## (a) The quickstart, trained end to end (wall time with and without the compilation in the log)'
QUICK=()
[ "$QUICK_STEPS" != 0 ] && QUICK=(--config.train.num_steps="$QUICK_STEPS")
/usr/bin/time -f 'quickstart wall %e s' $PY -m pneumojax.cli train --config experiments/quickstart.py \
  --workdir "$OUT/quickstart" "${DATA[@]}" "${QUICK[@]}" 2>&1 | grep -E 'step .*images/s|Test|wall' | tee "$OUT/quickstart.txt"
rm -rf "$OUT/quickstart/checkpoints"

echo '## (b) ResNet-50, real data with augmentation, end to end on both data paths, beside its step alone'
$PY -m pneumojax.cli bench --end_to_end "experiments/medmnist.py:$E2E_SIZE,resnet50" --run_steps "$RUN_STEPS" \
  --windows 3 --steps 5 --jsonl "$OUT/resnet50_e2e.jsonl" "${DATA[@]}" --config.model.dtype=bfloat16 \
  --config.train.batch_size="$E2E_BATCH" --config.train.eval_batch_size="$E2E_BATCH" | tee "$OUT/resnet50_e2e.md"

echo '## (c) The cost of deterministic GPU kernels: the same step without and with --xla_gpu_deterministic_ops'
for flags in "" "--xla_gpu_deterministic_ops=true"; do
  XLA_FLAGS="${XLA_FLAGS:-} $flags" $PY -m pneumojax.bench --models resnet50 --sizes "$SIZE" --batch_sizes "$BATCH" \
    --dtypes bfloat16 --channels 3 --windows 3 --steps 10 --jsonl "$OUT/deterministic.jsonl" | tail -1
done

echo '## ResNet-50: jax.jit over shard_map and jax.pmap'
$PY -m pneumojax.bench --models resnet50 --sizes "$SIZE" --batch_sizes "$BATCH" --dtypes bfloat16 --modes jit pmap \
  --channels 3 --windows 5 --steps 10 --jsonl "$OUT/resnet50.jsonl" | tee "$OUT/resnet50.md"

echo '## The same step with flax BatchNorm/max_pool and with pneumojax.models.layers'
$PY experiments/bench/layers_ab.py --model resnet50 --size "$SIZE" --batch_size "$BATCH" --dtype bfloat16 \
  --channels 3 | tee "$OUT/layers_ab.txt"

echo '## PyTorch peer: the same ResNet-50 (torchvision v1.5), channels-last, bfloat16 autocast'
$PY - "$SIZE" "$BATCH" <<'PYTHON' | tee "$OUT/pytorch.jsonl"
import json, sys
sys.path.insert(0, 'experiments/bench')
import torch, peers
device = 'cuda' if torch.cuda.is_available() else 'cpu'
row = peers.torch_speed('resnet50', int(sys.argv[1]), int(sys.argv[2]), channels=3, device=device,
                        dtype='bfloat16', windows=5, steps=10)
print(json.dumps({**row, 'model': 'resnet50', 'size': int(sys.argv[1]), 'batch_size': int(sys.argv[2]),
                  'device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}))
PYTHON

echo '## Model zoo (cost estimates for the paper setups)'
$PY -m pneumojax.bench --models resnet18 vgg16 densenet121 inception_v3 --batch_sizes "$ZOO_BATCH" \
  ${ZOO_SIZE:+--sizes $ZOO_SIZE} --dtypes bfloat16 --channels 3 --windows 3 --steps 5 --jsonl "$OUT/zoo.jsonl" \
  | tee "$OUT/zoo.md"
