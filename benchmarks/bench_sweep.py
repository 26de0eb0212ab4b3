"""Sweep machinery speed: ``launch`` of 1,000 runs (dummy launcher, and the slurm launcher as
one job-array submission) and ``collect_results.py`` over 500 runs x 20 checkpoints.

    PYTHONPATH=. python benchmarks/bench_sweep.py [--skip_slurm] [--runs 500 --checkpoints 20]

The slurm part needs a running Slurm (tests/slurm/setup_slurm.sh as root): its 1,000 runs are
submitted *held* (sbatch --hold), counted in squeue, and cancelled; nothing trains.
Goal (issue 6): collection of 500 x 20 in under 5 s.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sdgdml import collect, sweep
from sdgdml.train_args import build_parser

DOMAINS = ("mnist", "uci", "sketch", "negative", "colour", "rotate")
METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")


def write_synthetic_sweep(root: Path, n_runs: int, n_ckpt: int, seed: int = 0) -> None:
    """Run folders shaped like train.py's (args and hparams in every line, 6 splits x 5
    metrics, done file), with random metric values."""
    rng = random.Random(seed)
    algorithms = ["ProxyAnchor", "NormSoftmax", "SoftTriple", "ArcFace", "CosFace"]
    for i in range(n_runs):
        run = root / f"run{i:05d}"
        run.mkdir(parents=True)
        args = vars(build_parser().parse_args(["--output_dir", str(run)]))
        args.update(algorithm=algorithms[i % 5], hparams_seed=(i // 5) % 20,
                    trial_seed=i // 100, source="mnist", targets=list(DOMAINS[1:]))
        hparams = {"lr": rng.random(), "batch_size": 64, "pa_margin": 0.1, "embed_dim": 64}
        with open(run / "results.jsonl", "w") as f:
            for c in range(n_ckpt):
                rec = {"step": 100 * c, "epoch": c, "loss": rng.random(), "step_time": 0.1,
                       "eval_time": 1.0, "mem_gb": 1.0, "args": args, "hparams": hparams}
                for split in ["mnist_val", "mnist_test"] + [f"{d}_test" for d in DOMAINS[1:]]:
                    rec.update({f"{split}_{m}": rng.random() for m in METRICS})
                f.write(json.dumps(rec, sort_keys=True) + "\n")
        (run / "done").write_text("done\n")


def time_launch(launcher: str, n: int, extra: list[str]) -> float:
    out = Path(tempfile.mkdtemp(prefix=f"bench_launch_{launcher}_"))
    argv = ["launch", "--datasets", "DigitsDG", "--algorithms", "ProxyAnchor", "NormSoftmax",
            "--n_hparams", str(n // 20), "--n_trials", "10", "--output_dir", str(out),
            "--launcher", launcher, "--train_args", "--steps 1", *extra]
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        sweep.main(argv)
    dt = time.perf_counter() - t
    lines = buf.getvalue().splitlines()
    print(f"  {lines[0]}")
    print(f"  {[l for l in lines if l.startswith(launcher)][0]}")
    if launcher == "slurm":
        ids = sorted({json.loads(p.read_text())["job_id"].split("_")[0]
                      for p in out.glob("*/job.json")})
        queued = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i"],
                                capture_output=True, text=True).stdout.split()
        print(f"  sbatch submissions: {len(ids)}; array tasks in squeue: {len(queued)}")
        subprocess.run(["scancel", *ids], check=False)
    shutil.rmtree(out, ignore_errors=True)
    return dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--launch_runs", type=int, default=1000, help="runs in the launched sweep")
    p.add_argument("--runs", type=int, default=500, help="synthetic runs to collect")
    p.add_argument("--checkpoints", type=int, default=20, help="records per synthetic run")
    p.add_argument("--skip_slurm", action="store_true",
                   help="time only the dummy launcher (no running Slurm needed)")
    a = p.parse_args()

    print(f"launch of {a.launch_runs} runs (DigitsDG, 2 algorithms x {a.launch_runs // 20} "
          f"hparams x 10 trials):")
    t_dummy = time_launch("dummy", a.launch_runs, [])
    print(f"  dummy launcher: {t_dummy:.2f} s ({1000 * t_dummy / a.launch_runs:.2f} ms/run; "
          f"in-process, imports excluded)")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sdgdml.sweep", "launch", "--datasets", "DigitsDG",
                    "--algorithms", "ProxyAnchor", "NormSoftmax", "--n_hparams",
                    str(a.launch_runs // 20), "--n_trials", "10", "--output_dir",
                    tempfile.mkdtemp(), "--launcher", "dummy"], check=True,
                   stdout=subprocess.DEVNULL)
    print(f"  dummy launcher, whole `python -m sdgdml.sweep launch` process: "
          f"{time.perf_counter() - t:.2f} s")
    if not a.skip_slurm:
        if shutil.which("sbatch") is None:
            print("  slurm launcher: skipped (no sbatch; run tests/slurm/setup_slurm.sh as root)")
        else:
            t_slurm = time_launch("slurm", a.launch_runs, [
                "--slurm_additional_parameters", '{"hold": true}', "--timeout_min", "5"])
            print(f"  slurm launcher: {t_slurm:.2f} s ({1000 * t_slurm / a.launch_runs:.2f} "
                  f"ms/run, in-process, incl. the data check, 1,000 pickles, sbatch and 1,000 "
                  f"job.json; {t_slurm / t_dummy:.1f}x the dummy launcher)")

    root = Path(tempfile.mkdtemp(prefix="bench_collect_"))
    try:
        t = time.perf_counter()
        write_synthetic_sweep(root, a.runs, a.checkpoints)
        size = sum(f.stat().st_size for f in root.rglob("results.jsonl")) / 2 ** 20
        print(f"\nsynthetic sweep: {a.runs} runs x {a.checkpoints} checkpoints, {size:.1f} MiB "
              f"of records (written in {time.perf_counter() - t:.1f} s)")
        cmd = [sys.executable, "collect_results.py", "--input_dir", str(root),
               "--metrics", "recall@1", "map@r", "--show_hparams"]
        for label, extra in (("markdown", []), ("latex", ["--latex"]),
                             ("3 selections", ["--selection", "source_val", "oracle", "last"])):
            t = time.perf_counter()
            res = subprocess.run(cmd + extra, capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parents[1])
            dt = time.perf_counter() - t
            assert res.returncode == 0, res.stderr
            print(f"collect_results.py ({label}), whole process incl. imports: {dt:.2f} s "
                  f"(goal < 5 s: {'met' if dt < 5 else 'NOT met'})")
        t = time.perf_counter()
        df, _ = collect.load_records(root)
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        for m in collect.SELECTION_METHODS:
            collect.select(df, m)
        print(f"  of which loading {len(df)} records: {t_load:.2f} s; three selections: "
              f"{time.perf_counter() - t:.2f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
