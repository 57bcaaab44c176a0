#!/usr/bin/env bash
# The sample-efficiency grid behind the 30-minute CPU recipe (reports/recipe_grid/README.md).
# Each line of grid.txt: a candidate, the epochs its measured CPU speed buys in 25 minutes
# (cpu_probe.py), and its fit overrides. Each is trained on a GPU with the recipe's config for
# that many epochs (one-cycle over epochs instead of minutes: the same schedule per epoch),
# validation split only; the hold-out split is never looked at. The grid ran before the recipe
# took progressive resizing and a 1,000-image validation split: both are undone here.
#   OUT=/tmp/grid bash reports/recipe_grid/grid.sh [DATA_ROOT]
# Three jobs at a time, 4 threads each: with five jobs and torch's default thread count the
# 16-core host ran each at ~2,400 images/s instead of ~12,000-16,000.
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
ROOT=${1:-../shared/data/cifar10-jpeg-train.tar.gz}
DATA="--data.dataset imagefolder --data.root $ROOT"
Q="--trainer.enable_progress_bar false --trainer.num_sanity_val_steps 0"
mkdir -p "$OUT"
job() {
  IFS='|' read -r name epochs extra <<< "$1"
  timeout 600 python3 -m lightning_densenet fit --config configs/cifar10_cpu.yaml $DATA $Q \
    --model.budget_minutes null --model.compile false --trainer.max_epochs "$epochs" \
    --model.progressive_size null --data.val_size 5000 \
    --trainer.default_root_dir "$OUT/$name" $extra > "$OUT/$name.log" 2>&1
  cp "$OUT/$name"/*/version_0/metrics.csv "$OUT/$name.csv"
}
export -f job; export DATA Q OUT
grep -v '^$' "$(dirname "$0")/grid.txt" | xargs -d '\n' -P 3 -I{} bash -c 'job "$@"' _ {}
