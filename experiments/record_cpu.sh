#!/usr/bin/env bash
# The runs recorded in experiments/results/ on the 2-core development machine (REPRODUCTION.md), one after the
# other, 3 seeds each. Shortened schedules are command-line overrides, so each results.json records them.
#
#   bash experiments/record_cpu.sh [STEP ...]     # STEP: weights kermany_binary kermany_bvv kermany_effnet jain medmnist
#                                                  # (jain = jain_model1 jain_model2)
#   JAIN_EPOCHS=3 MEDMNIST_EPOCHS=8 bash experiments/record_cpu.sh   # the shortened schedules (about 3 h on 2 vCPUs)
#   SEEDS=0 bash experiments/record_cpu.sh jain medmnist   # the full schedules (hours per seed): stop it at any
#                                                  # time; the same command resumes from the last checkpoints
#   bash experiments/record_cpu.sh jain_model1 & bash experiments/record_cpu.sh jain_model2   # side by side
#   pneumojax reproduce                           # then: experiments/REPRODUCTION.md from the results files
set -euo pipefail
cd "$(dirname "$0")/.."
PJ=(python -m pneumojax.cli)
DATA=--config.data.manual_dir=../shared/data/chest_xray
W=../shared/weights
SEEDS=${SEEDS:-0 1 2}

recorded_by() {  # RESULTS ARGS...: whether RESULTS (a results.json) was recorded by `pneumojax ARGS...`
  [[ -f $1 ]] && python - "$@" <<'PY'
import json, sys
sys.exit(json.load(open(sys.argv[1]))['run']['command'].split()[1:] != sys.argv[2:])
PY
}

train() {  # SETUP CONFIG [OVERRIDES...]: one run per seed into experiments/results/SETUP/seedN
  # A seed recorded by this very command is skipped; one recorded by another (say a shortened schedule) is run
  # again in place, and an interrupted run resumes from its last checkpoint there.
  local setup=$1 config=$2; shift 2
  for seed in $SEEDS; do
    local args=(train --config "$config" --workdir "experiments/results/$setup/seed$seed" --config.seed="$seed" \
      "$DATA" "$@")
    recorded_by "experiments/results/$setup/seed$seed/results.json" "${args[@]}" && continue
    "${PJ[@]}" "${args[@]}"
  done
}

requested=("$@")
[[ ${#requested[@]} -gt 0 ]] || requested=(weights kermany_binary kermany_bvv kermany_effnet jain medmnist)
steps=()
for step in "${requested[@]}"; do
  if [[ $step == jain ]]; then steps+=(jain_model1 jain_model2); else steps+=("$step"); fi
done
for step in "${steps[@]}"; do
  case $step in
    weights)
      [[ -d pretrained/mobilenet_v2_035 ]] || python -m pneumojax.weights \
        $W/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5 --model mobilenet_v2 \
        --kwarg alpha=0.35 --out pretrained/mobilenet_v2_035
      [[ -d pretrained/efficientnet_lite0 ]] || python -m pneumojax.weights \
        $W/efficientnet_lite0_imagenet_torch_layout.npz --model efficientnet_lite0 --out pretrained/efficientnet_lite0
      ;;
    kermany_binary) train kermany2018_binary_mobilenet_v2 experiments/kermany2018.py:mobilenet_v2,binary ;;
    kermany_bvv) train kermany2018_bacteria_vs_virus_mobilenet_v2 experiments/kermany2018.py:mobilenet_v2,bacteria_vs_virus ;;
    kermany_effnet)
      train kermany2018_binary_efficientnet_lite0 experiments/kermany2018.py:efficientnet_lite0,binary
      train kermany2018_bacteria_vs_virus_efficientnet_lite0 experiments/kermany2018.py:efficientnet_lite0,bacteria_vs_virus ;;
    # One CPU device: the 24M-parameter dense layer's Adam update, replicated on 4 virtual devices sharing 2 cores,
    # made the step 13% slower (18.7 vs 16.2 images/s); the results do not depend on it. One such run keeps only
    # about 1.3 of 2 cores busy: Model 1 alone trained at 37 images/s, and at 29 beside Model 2 (which ran at 20).
    jain_model1) train jain2020_model1 experiments/jain2020.py:model1 \
      --config.train.num_epochs="${JAIN_EPOCHS:-20}" --config.distributed.cpu_devices=1 ;;
    jain_model2) train jain2020_model2 experiments/jain2020.py:model2 \
      --config.train.num_epochs="${JAIN_EPOCHS:-20}" --config.distributed.cpu_devices=1 ;;
    medmnist) train medmnist_28_resnet18 experiments/medmnist.py:28,resnet18 \
      --config.train.num_epochs="${MEDMNIST_EPOCHS:-100}" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
