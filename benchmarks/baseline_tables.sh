#!/usr/bin/env bash
# Med-cDiff's three baseline tables on the data meddiff ships (issue 7): train every method for the
# same budget, then restore the same seeded Colin27 degradations and score them (benchmarks/compare.py
# -> meddiff evaluate). This is the sequence behind the README's "Baselines" tables.
#
#   bash benchmarks/baseline_tables.sh            # everything, one job after another (~3 h on one core)
#   STEP=tables bash benchmarks/baseline_tables.sh  # only the tables, from runs already trained
#
# Budget: the images the shipped SR recipe sees, 900 steps x 16 random 64x64 crops = 14,400 crops
# per model: batch 16 -> 900 steps (meddiff DDPMs, SRGAN), batch 8 -> 1800 steps (pix2pix, UP-GAN,
# HPUNet). The super-resolution DDPM is the shipped multi-factor model (900 x4 steps + 1200
# multi-factor steps, i.e. more than the budget); the SR baselines are trained on the three table
# factors at once (task.sr_factors), like it.
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${STEP:-all}
SR='task.sr_factors=[2.8284271247461903,4.0,5.656854249492381]'
train() { echo "== meddiff train $*"; meddiff train "$@" --no-progress; }

if [ "$STEP" = all ]; then
  [ -d runs/prep_mni ] || meddiff prepare src/meddiff/data/samples/mni152 runs/prep_mni
  # meddiff DDPMs (the shipped recipe, configs/demo_*.yaml)
  train --config configs/demo_denoise.yaml train.steps=900
  train --config configs/demo_inpaint.yaml train.steps=900
  # learned baselines
  train --config configs/baselines/pix2pix_sr_x4.yaml "$SR" train.steps=1800 train.out_dir=runs/pix2pix_sr
  train --config configs/baselines/srgan_sr_x4.yaml "$SR" train.steps=900 baseline.pretrain_steps=450 train.out_dir=runs/srgan_sr
  train --config configs/baselines/pix2pix_denoise.yaml train.steps=1800
  train --config configs/baselines/upgan_denoise.yaml train.steps=1800
  train --config configs/baselines/pix2pix_inpaint.yaml train.steps=1800
  train --config configs/baselines/hpunet_inpaint.yaml train.steps=1800
  train --config configs/baselines/upgan_inpaint.yaml train.steps=1800
fi

python benchmarks/compare.py --task sr --out runs/compare_sr --method meddiff=src/meddiff/checkpoints/demo_sr_multi.safetensors \
    --method pix2pix=runs/pix2pix_sr --method srgan=runs/srgan_sr
python benchmarks/compare.py --task denoise --out runs/compare_denoise --method meddiff=runs/demo_denoise \
    --method pix2pix=runs/pix2pix_denoise --method upgan=runs/upgan_denoise
python benchmarks/compare.py --task inpaint --out runs/compare_inpaint --method meddiff=runs/demo_inpaint \
    --method pix2pix=runs/pix2pix_inpaint --method hpunet=runs/hpunet_inpaint --method upgan=runs/upgan_inpaint
