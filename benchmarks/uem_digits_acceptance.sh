#!/bin/bash
# UEM's acceptance comparison on DigitsDG (issue 10): UEM vs ProtoAlign (the slides-based former
# UEM) vs UEM stage 1 only (uem_idse_fraction 1), mnist -> uci, closed / partial / open UCDR,
# seeds 2024 2025 2026, 200 steps of batch 64 each, App. B.1 detector for every method; then a
# table of mean +- std. Single-threaded (a shared 2-core CPU); about 3 (UEM) to 6 (ProtoAlign)
# minutes per run there.
#   bash benchmarks/uem_digits_acceptance.sh OUT_DIR [SEEDS...]
set -u
OUT=${1:-runs/uem_digits}; shift || true
SEEDS=${*:-2024 2025 2026}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PYTHON:-python}
for seed in $SEEDS; do
 for setting in closed partial open; do
  for alg in UEM ProtoAlign UEM-stage1; do
   algo=$alg; hp='{}'
   if [ "$alg" = UEM-stage1 ]; then algo=UEM; hp='{"uem_idse_fraction": 1.0}'; fi
   $PY -m sdgdml.train --algorithm $algo --dataset DigitsDG --source mnist --targets uci \
     --ucdr $setting --open_rule detector --open_max_clusters 20 --trial_seed $seed \
     --steps 200 --checkpoint_freq 200 --no_eval_at_start --quiet --hparams "$hp" \
     --output_dir "$OUT/$setting/$alg/$seed" > /dev/null
  done
 done
done
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
import numpy as np
rows = {}
for f in sorted(Path(sys.argv[1]).glob("*/*/*/results.jsonl")):
    setting, alg, seed = f.parts[-4:-1]
    last = [json.loads(line) for line in f.read_text().splitlines()][-1]
    for k, v in last.items():
        if k.startswith("mnist->uci") and k.endswith(("map@all", "detect_acc", "open_auroc")):
            rows.setdefault((setting, alg, k.split("_", 2)[-1]), {})[seed] = v
print(f"{'setting':8} {'algorithm':11} {'metric':15} {'mean':>6} {'std':>6}  seeds")
for (setting, alg, metric), v in sorted(rows.items()):
    x = 100 * np.array(list(v.values()))
    print(f"{setting:8} {alg:11} {metric:15} {x.mean():6.2f} {x.std():6.2f}  "
          f"{','.join(v)}: {' '.join(f'{a:.2f}' for a in x)}")
PYEOF
