#!/bin/bash
# UEM's acceptance comparison on DigitsDG (issue 22), mnist (query) -> uci (retrieval), closed /
# partial / open UCDR, seeds 2024 2025 2026, every method from the same MoCo v2 start:
#   1. python -m sdgdml.pretrain: MoCo v2 on the unlabeled images of mnist + uci (once; the
#      paper's start is MoCo v2 on ImageNet, which DigitsDG's small CNN has no equivalent of);
#   2. UEM for STEPS steps (stage 1 = the first 2/3), evaluated at step 0 (the start itself:
#      the plain baseline), at the end of stage 1 (UEM's stage 1 alone) and at the end;
#   3. ProtoAlign (the slides-based former UEM) for STEPS steps from the same start.
# K: every method is given the true class count, 10 (uem_num_prototypes 10; ProtoAlign's
# pal_num_prototypes 0 = the dataset's classes; the App. B.1 detector's K-Means --open_clusters
# 10), an oracle the unsupervised setting does not have.
#   bash benchmarks/uem_digits_acceptance.sh OUT_DIR [SEEDS...]
# Env: PYTHON (python), JOBS (2 runs at a time), STEPS (105), PRETRAIN_STEPS (800), LR (empty:
# the recipe's AdamW 1e-3; set for every method alike, e.g. 1e-4 to fine-tune the MoCo start gently).
set -eu
OUT=${1:-runs/uem_digits}; shift || true
SEEDS=${*:-2024 2025 2026}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PYTHON:-python}
STEPS=${STEPS:-105}
JOBS=${JOBS:-2}
MOCO="$OUT/moco_digits.pth.tar"
mkdir -p "$OUT"
[ -f "$MOCO" ] || $PY -m sdgdml.pretrain --dataset DigitsDG --domains mnist uci \
    --steps "${PRETRAIN_STEPS:-800}" --batch_size 128 --output "$MOCO"
STAGE1=$(( STEPS * 2 / 3 ))
run() {  # setting alg seed
  local hp freq
  if [ "$2" = UEM ]; then
    hp='"uem_init": "moco_v2", "uem_num_prototypes": 10, "uem_idse_fraction": 0.6666667'
    freq=$(( STAGE1 / 2 ))
  else
    hp=''; freq=$STEPS
  fi
  [ -n "${LR:-}" ] && hp="${hp:+$hp, }\"lr\": $LR"
  hp="{$hp}"
  $PY -m sdgdml.train --algorithm "$2" --dataset DigitsDG --source mnist --targets uci \
    --ucdr "$1" --open_rule detector --open_clusters 10 --trial_seed "$3" \
    --pretrained_file "$MOCO" --steps "$STEPS" --checkpoint_freq "$freq" --quiet \
    --hparams "$hp" --output_dir "$OUT/$1/$2/$3" > /dev/null
}
export -f run
export PY MOCO STEPS STAGE1 OUT LR
for seed in $SEEDS; do for setting in closed partial open; do for alg in UEM ProtoAlign; do
  echo "$setting $alg $seed"; done; done; done | xargs -P "$JOBS" -L 1 bash -c 'run "$@"' _
$PY - "$OUT" "$STAGE1" <<'PYEOF'
import json, sys
from pathlib import Path
import numpy as np
out, stage1 = Path(sys.argv[1]), int(sys.argv[2])
rows = {}      # (setting, method, metric) -> {seed: value}
for f in sorted(out.glob("*/*/*/results.jsonl")):
    setting, alg, seed = f.parts[-4:-1]
    recs = {r["step"]: r for r in map(json.loads, f.read_text().splitlines())}
    picks = ({"start (MoCo v2, no training)": min(recs), "UEM stage 1 alone": stage1,
              "UEM (stage 1 + 2)": max(recs)} if alg == "UEM" else {alg: max(recs)})
    for method, step in picks.items():
        for k, v in recs[step].items():
            if k.startswith("mnist->uci") and k.endswith(("map@all", "detect_acc")):
                rows.setdefault((setting, method, k.split("_", 2)[-1]), {})[seed] = v
print(f"{'setting':8} {'method':30} {'metric':11} {'mean':>6} {'SE':>5}  per seed")
for (setting, method, metric), v in sorted(rows.items()):
    x = 100 * np.array(list(v.values()))
    se = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    print(f"{setting:8} {method:30} {metric:11} {x.mean():6.2f} {se:5.2f}  "
          f"{' '.join(f'{s}:{a:.2f}' for s, a in zip(v, x))}")
PYEOF
