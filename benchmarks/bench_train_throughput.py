"""Training throughput of the speed settings (``sdgdml/speed.py``), in one run on one machine:

1. the training step (forward, loss, backward, optimiser step of the real ``Algorithm``
   classes, on a synthetic batch already on the device) under fp32 eager, bf16,
   bf16 + channels_last and bf16 + channels_last + compile: images/s, peak memory and what each
   plug-in adds to the bare base loss's step, each as a ratio to fp32 eager;
2. the input pipeline (JPEG decode + random-resized crop + flip + normalise, ``DataLoader``
   with the trainer's settings and the default number of workers), with and without
   ``--jpeg_draft``: images/s it delivers, next to what the fastest step consumes.

    python benchmarks/bench_train_throughput.py --device cuda      # ResNet-50, 224 px, batch 120
    python benchmarks/bench_train_throughput.py --device cpu --backbone resnet18 \\
        --image_size 64 --batch_size 32 --steps 10 --file_size 600  # what fits a small CPU

3. ``--launches``: what makes a GPU step launch-bound, per algorithm (every registered one by
   default) on the DigitsDG CNN (batch 64, ``Algorithm.train_step`` only, after warm-up):
   top-level aten operators per step (``torch.profiler``, steps 12-14), tensor-to-host reads
   per step (steps 12-21, ours and pytorch-metric-learning's; the optimiser's own step counters
   live on the host and are left out), recompiles after warm-up with ``--compile``
   (``--compile_backend``, ``aot_eager`` by default: recompiles are Dynamo's, whatever the
   backend; inductor's CPU code generation takes minutes per graph on a small machine),
   eager step time and its ratio to the bare base loss (plug-ins) in the same run, and what
   runs eager under ``--compile`` (``Algorithm.compile_parts``). Loss compositions are measured
   mid-training (step 500 of 1000), standalone methods from step 0 (their queues and banks
   fill as they train):

    python benchmarks/bench_train_throughput.py --launches --threads 1
    PYTHONPATH=<other checkout> python benchmarks/bench_train_throughput.py --launches  # before

Every (setting, algorithm) step runs in a fresh child process, one after the other
(``--rounds`` times, round-robin, median kept), so that
peak memory (CUDA: ``max_memory_allocated``; CPU: the child's peak resident memory, Python and
torch included) and compiled code are its own. Step times are medians of ``--steps`` steps
after ``--warmup`` (compilation happens in the warm-up and is reported apart). Nothing here
asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SETTINGS = {     # name: (precision, channels_last, compile backend)
    "fp32 eager": ("fp32", False, None),
    "bf16": ("bf16", False, None),
    "bf16+channels_last": ("bf16", True, None),
    "bf16+channels_last+compile": ("bf16", True, "inductor"),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child(spec: dict) -> dict:
    """Time one algorithm's training step under one setting (in its own process)."""
    from sdgdml import speed
    from sdgdml.algorithms import Schedule, create_algorithm
    from sdgdml.hparams_registry import get_hparams
    from sdgdml.networks import create_model

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    precision, channels_last, backend = SETTINGS[spec["setting"]]
    hp = get_hparams(spec["algorithm"], "benchmark", 0, {
        "backbone": spec["backbone"], "image_size": spec["image_size"], "pretrained": False,
        "batch_size": spec["batch_size"], "warmup_epochs": 0})
    schedule = Schedule(1000, 100)
    alg = create_algorithm(spec["algorithm"], create_model(hp), spec["classes"], hp, schedule,
                           {}).to(device)
    alg.step = schedule.total_steps // 2      # mid-training (curricula of SEE, CenterPolar)
    compiled = speed.configure(alg, precision, channels_last, backend, device)
    b, s = spec["batch_size"], spec["image_size"]
    batch = {"x": torch.randn(b, 3, s, s, device=device),
             "y": torch.randint(0, spec["classes"], (b,), device=device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(spec["warmup"]):
        alg.train_step(batch)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(spec["steps"]):
        t = time.perf_counter()
        alg.train_step(batch)
        _sync(device)
        times.append(time.perf_counter() - t)
    mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30
    return {"step_s": statistics.median(times), "mem_gb": mem, "warmup_s": warmup_s,
            "compiled": compiled}


def _counter():
    """``sdgdml.scalars.count_host_reads`` of this checkout, also when another checkout's
    sdgdml is imported (``PYTHONPATH``: to measure code from before it existed)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "sdgdml" / "scalars.py"
    spec = importlib.util.spec_from_file_location("_bench_scalars", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.count_host_reads


def _top_level_ops(prof) -> int:
    """aten operators not called from inside another aten operator."""
    def nested(e):
        p = e.cpu_parent
        while p is not None:
            if p.name.startswith("aten::"):
                return True
            p = p.cpu_parent
        return False
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and not nested(e))


def launch_child(spec: dict) -> dict:
    """Ops, host reads, recompiles and step time of one algorithm (in its own process)."""
    from sdgdml import speed
    from sdgdml.algorithms import Schedule, create_algorithm, data_needs
    from sdgdml.hparams_registry import get_hparams
    from sdgdml.networks import create_model

    torch.manual_seed(0)
    name, b, classes = spec["algorithm"], spec["batch_size"], 10
    hp = get_hparams(name, "DigitsDG", 0, {"batch_size": b})
    sizes = {"mnist": 4 * b, "uci": 4 * b}
    alg = create_algorithm(name, create_model(hp), classes, hp, Schedule(1000, 100), sizes)
    if hasattr(alg, "loss"):        # mid-training (curricula of SEE, CenterPolar); standalone
        alg.step = 500              # methods fill their queues and banks from step 0 on
    if spec["compile"]:
        from torch import _dynamo

        _dynamo.reset()
        speed.configure(alg, "fp32", False, spec["compile"], torch.device("cpu"))
    needs, g = data_needs(name), torch.Generator().manual_seed(0)

    def batch(step):
        x = torch.randn(b, 3, 32, 32, generator=g)
        out = {"x": x, "y": torch.arange(b) % classes}
        if needs.indices:
            out["index"] = (torch.arange(b) + step * b) % sizes["mnist"]
        if needs.unlabeled_targets:
            out["unlabeled"] = {"uci": x.flip(0)}
            out["unlabeled_index"] = {"uci": (torch.arange(b) + step * 3) % sizes["uci"]}
        return out

    steps = iter(range(10 ** 6))
    for _ in range(12):                         # warm-up (compilation, first clustering)
        alg.train_step(batch(next(steps)))
    graphs0 = _graphs()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            alg.train_step(batch(next(steps)))
    ops = _top_level_ops(prof) / 3
    with _counter()() as reads:
        for _ in range(10):
            alg.train_step(batch(next(steps)))
    times = []
    for _ in range(spec["steps"]):
        x = batch(next(steps))
        t = time.perf_counter()
        alg.train_step(x)
        times.append(time.perf_counter() - t)
    return {"ops": ops, "ours": reads["ours"] / 10, "pml": reads["pml"] / 10,
            "recompiles": _graphs() - graphs0 if spec["compile"] else None,
            "eager": sorted(getattr(alg, "compile_parts", lambda: ([], {}))()[1]),
            "step_s": statistics.median(times)}


def _graphs() -> int:
    """Graphs Dynamo has compiled so far in this process."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _base_of(name: str) -> str | None:
    from sdgdml.algorithms import components

    parts = components(name)
    return parts[0].name if len(parts) > 1 else None


def launch_table(args) -> None:
    from sdgdml.algorithms import names
    from sdgdml.algorithms.registry import component
    from tabulate import tabulate

    algorithms = args.algorithms_all or [
        *names("loss"), *[f"{component('plugin', p).default_base or 'ProxyAnchor'}+{p}"
                          for p in names("plugin")], *names("algorithm")]
    rows, results = [], {}
    for name in algorithms:
        spec = {"algorithm": name, "batch_size": 64, "steps": args.steps, "compile": None}
        r = _run_child(spec, args, "--_launch_child")
        if r is not None and args.compile_backend:
            c = _run_child({**spec, "compile": args.compile_backend, "steps": 3}, args,
                           "--_launch_child")
            r["recompiles"] = None if c is None else c["recompiles"]
        results[name] = r
        print(f"  {name:32s} {r}", flush=True)
    for name, r in results.items():
        if r is None:
            continue
        base = results.get(_base_of(name) or "")
        rows.append([name, r["ops"], None if base is None else 100 * (r["ops"] / base["ops"] - 1),
                     r["ours"], r["pml"], r["recompiles"], 1000 * r["step_s"],
                     None if base is None else r["step_s"] / base["step_s"],
                     ", ".join(r.get("eager", [])) or None])
    print(f"\n3. launches per training step: DigitsDG CNN, batch 64, 32 px, CPU "
          f"({torch.get_num_threads()} threads, torch {torch.__version__}), "
          f"--compile {args.compile_backend} for recompiles")
    print(tabulate(rows, headers=["algorithm", "aten ops/step", "+% vs base", "reads ours",
                                  "reads pml", "recompiles", "step ms", "x base",
                                  "eager under --compile"],
                   floatfmt=".1f", missingval="-"))


def _run_child(spec: dict, args, flag: str) -> dict | None:
    threads = ["--threads", str(args.threads)] if args.threads else []
    out = subprocess.run([sys.executable, __file__, *threads, flag, json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{spec['algorithm']}: failed\n{out.stderr[-2000:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _photo(rng, h: int, w: int) -> np.ndarray:
    """A smooth photo-like image (decodes like a photo, unlike noise)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    f = rng.uniform(2, 12, 6)
    img = np.stack([0.5 + 0.4 * np.sin(f[c] * xx + c) * np.cos(f[c + 3] * yy) for c in range(3)],
                   -1)
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def pipeline_ips(folder: Path, n: int, args, draft: bool, workers: int) -> float:
    """Images/s the training input pipeline delivers from the JPEG files in ``folder``."""
    from sdgdml.datasets import ImageDataset
    from sdgdml.datasets.samples import FileSamples, Split
    from sdgdml.datasets.samplers import StepBatchSampler
    from sdgdml.datasets import transforms as T
    from sdgdml.streams import PREFETCH_BATCHES

    paths = sorted(folder.glob("*.jpg"))
    samples = FileSamples("bench", paths, [0] * len(paths))
    samples.draft_size = 2 * args.image_size if draft else None
    split = Split("bench", samples, np.arange(len(paths)), np.zeros(len(paths), dtype=int))
    steps = max(3, n // args.batch_size)
    sampler = StepBatchSampler(len(paths), args.batch_size, 0, steps)
    loader = torch.utils.data.DataLoader(
        ImageDataset(split, T.standard_train(args.image_size)), batch_sampler=sampler,
        num_workers=workers, persistent_workers=workers > 0,
        prefetch_factor=PREFETCH_BATCHES if workers > 0 else None)
    it = iter(loader)
    next(it)                    # workers started, first batches in flight
    t0, count = time.perf_counter(), 0
    for x, _ in it:
        count += len(x)
    return count / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="resnet50.tv_in1k", help="timm name (random init)")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=120)
    p.add_argument("--classes", type=int, default=100, help="classes (proxies) of the loss")
    p.add_argument("--algorithms", nargs="+",
                   default=["ProxyAnchor", "ProxyAnchor+SEE", "ProxyAnchor+CenterPolar"],
                   help="the first is the base; the others' cost is reported against it")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--steps", type=int, default=30, help="timed steps (median kept)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    p.add_argument("--rounds", type=int, default=1,
                   help="times every (setting, algorithm) child runs, round-robin (median "
                        "kept): steadier ratios on a shared machine")
    p.add_argument("--files", type=int, default=600, help="JPEG files of the pipeline test")
    p.add_argument("--file_size", type=int, default=800, help="long side of the JPEGs, px")
    p.add_argument("--num_workers", type=int, default=None,
                   help="pipeline workers (default: the trainer's, from the job's CPUs)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads in every process (default: torch's); 1 is steadier "
                        "on a shared machine")
    p.add_argument("--launches", action="store_true",
                   help="print table 3 only (ops, host reads, recompiles per algorithm)")
    p.add_argument("--algorithms_all", nargs="+", default=None, metavar="ALGORITHM",
                   help="--launches: these algorithms (default: every registered one)")
    p.add_argument("--compile_backend", default="aot_eager",
                   help="--launches: the backend whose recompiles are counted ('' : none)")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_launch_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)     # the children's too
    if args._child:
        print(json.dumps(child(json.loads(args._child))))
        return
    if args._launch_child:
        print(json.dumps(launch_child(json.loads(args._launch_child))))
        return
    if args.launches:
        launch_table(args)
        return

    runs: dict[tuple, list[dict]] = {}
    for _ in range(args.rounds):        # round-robin: load changes hit every pair alike
        for setting in args.settings:
            for alg in args.algorithms:
                r = _child_run(setting, alg, args)
                if r is not None:
                    runs.setdefault((setting, alg), []).append(r)
                    print(f"  {setting:28s} {alg:26s} {r}", flush=True)
    results = {key: {**rs[0], "step_s": statistics.median(r["step_s"] for r in rs),
                     "mem_gb": max(r["mem_gb"] for r in rs)} for key, rs in runs.items()}
    _print_steps(results, args)

    from sdgdml.speed import default_num_workers

    workers = default_num_workers(True) if args.num_workers is None else args.num_workers
    rng = np.random.default_rng(0)
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.files):
            h = args.file_size * 3 // 4
            Image.fromarray(_photo(rng, h, args.file_size)).save(f"{tmp}/{i:05d}.jpg",
                                                                 quality=90)
        n = args.files
        plain = pipeline_ips(Path(tmp), n, args, False, workers)
        draft = pipeline_ips(Path(tmp), n, args, True, workers)
    best = max((args.batch_size / r["step_s"] for r in results.values()), default=None)
    print(f"\n2. input pipeline: {args.files} JPEGs of {args.file_size}x{args.file_size * 3 // 4}"
          f" px -> random-resized crop {args.image_size}, batch {args.batch_size}, "
          f"{workers} workers (of {len(os.sched_getaffinity(0))} CPUs)")
    print(f"   full decode: {plain:.0f} img/s; --jpeg_draft: {draft:.0f} img/s "
          f"(x{draft / plain:.2f})")
    if best:
        print(f"   the fastest training step above consumes {best:.0f} img/s: the pipeline "
              f"delivers x{plain / best:.2f} of it (x{draft / best:.2f} with --jpeg_draft)")


def _child_run(setting: str, alg: str, args) -> dict | None:
    spec = {"setting": setting, "algorithm": alg, "device": args.device,
            **{k: getattr(args, k) for k in ("backbone", "image_size", "batch_size", "classes",
                                             "steps", "warmup")}}
    threads = ["--threads", str(args.threads)] if args.threads else []
    out = subprocess.run([sys.executable, __file__, *threads, "--_child", json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{setting} / {alg}: failed\n{out.stderr[-2000:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print_steps(results: dict, args) -> None:
    from tabulate import tabulate

    base_alg, plugins = args.algorithms[0], args.algorithms[1:]
    ref = results.get(("fp32 eager", base_alg))
    rows = []
    for setting in args.settings:
        r = results.get((setting, base_alg))
        if r is None:
            continue
        ips = args.batch_size / r["step_s"]
        row = [setting + ("" if r["compiled"] or "compile" not in setting else " (eager)"),
               ips, None if ref is None else ref["step_s"] / r["step_s"], r["mem_gb"],
               None if ref is None else r["mem_gb"] / ref["mem_gb"]]
        for plugin in plugins:
            q = results.get((setting, plugin))
            row.append(None if q is None else 100 * (q["step_s"] / r["step_s"] - 1))
        row.append(r["warmup_s"])
        rows.append(row)
    print(f"\n1. training step, {base_alg} on {args.backbone} at {args.image_size} px, batch "
          f"{args.batch_size}, device {args.device} ({torch.get_num_threads()} threads, torch "
          f"{torch.__version__})")
    print(tabulate(rows, headers=["setting", "img/s", "x fp32 eager", "peak GB",
                                  "mem x fp32", *[f"+{p.split('+', 1)[1]} %" for p in plugins],
                                  "warm-up s"], floatfmt=".2f", missingval="-"))


if __name__ == "__main__":
    main()
