import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # never wait on the network in tests
# The suite runs on the CPU everywhere (results identical to CI's, bit-exact resume checks), also
# in the processes it starts; the GPU tests (tests/test_gpu.py, marker "gpu") run with
# SDGDML_TEST_GPU=1 on a machine with CUDA:  SDGDML_TEST_GPU=1 python -m pytest -m gpu
if os.environ.get("SDGDML_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
# On the CPU, oneDNN (convolutions), ATen's vectorised kernels (reductions, softmax) and MKL's
# BLAS (matrix products: linear layers, similarity matrices) pick their code by the CPU's
# instruction set, and AVX-512 / AMX code sums in another order than AVX2 code: 40 training steps
# then differ from the 5th digit on. Pinning all three to AVX2 (which every x86-64 CPU of the last
# decade has) brings machines close, not together: an Intel and an AMD CPU still differ by float
# noise, which training amplifies (the tolerances of tests/test_refactor_golden.py are measured
# from it). Set before torch is imported.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")
os.environ.setdefault("MKL_CBWR", "AVX2")
# `make test` runs the suite in 2 pytest-xdist workers: one intra-op thread each (and in the
# processes they start), else each worker's torch threads compete for the same cores. On the
# 2-core machine: 4 min 49 s against 6 min 48 s for one process with two threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """The embedded benchmark with its default source (mnist) and all targets."""
    from sdgdml.datasets import DigitsDG

    return DigitsDG()


@pytest.fixture(scope="session")
def tiny_reference_run(tmp_path_factory):
    """The folder of an uninterrupted ``helpers.TINY_RESUME`` run (done, no checkpoint): read
    it or copy it, never change it (a test that needs a finished run folder copies it)."""
    import sdgdml.train as train_mod
    from helpers import TINY_RESUME

    out = tmp_path_factory.mktemp("uninterrupted")
    train_mod.train(train_mod.build_parser().parse_args(TINY_RESUME + ["--output_dir", str(out)]))
    return out


@pytest.fixture(scope="session")
def tiny_reference(tiny_reference_run):
    """The records of an uninterrupted ``helpers.TINY_RESUME`` run (steps 0, 2, 4), shared by
    the tests that compare a resumed run with it (test_resume, test_faults)."""
    from helpers import run_records

    records = run_records(tiny_reference_run)
    assert [r["step"] for r in records] == [0, 2, 4]
    return records


@pytest.fixture(scope="session")
def _fork_server():
    from forked_train import TrainForks
    from helpers import subprocess_env

    with TrainForks(subprocess_env()) as forks:
        yield forks


@pytest.fixture
def train_forks(_fork_server):
    """A ``forked_train.TrainForks`` server, started once and shared by the tests that SIGKILL
    training processes (test_faults, test_resume); a child a test leaves running is killed."""
    yield _fork_server
    _fork_server.stop_last()


SLURM_SETUP = "tests/slurm/setup_slurm.sh"


def _slurm_ready() -> tuple[bool, str]:
    import shutil
    import subprocess

    if shutil.which("sinfo") is None:
        return False, f"Slurm is not installed (as root: bash {SLURM_SETUP}; `make test` does it)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=20)
    except subprocess.SubprocessError as e:
        return False, f"sinfo failed: {e}"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*") in ("idle", "mixed", "allocated")
                                      for s in states):
        return False, f"no usable Slurm node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return True, ""


@pytest.fixture(scope="session")
def slurm():
    """A working Slurm (single node). Started with tests/slurm/setup_slurm.sh when it is
    installed but down and we are root; otherwise the test skips with the reason."""
    import subprocess
    import shutil
    from pathlib import Path

    ok, reason = _slurm_ready()
    if not ok and shutil.which("slurmctld") and os.geteuid() == 0:
        script = Path(__file__).resolve().parents[1] / SLURM_SETUP
        res = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True,
                             timeout=600)
        ok, reason = _slurm_ready()
        if not ok:
            reason += f"; {SLURM_SETUP} said: {(res.stdout + res.stderr)[-500:]}"
    if not ok:
        print(f"\nSKIP Slurm tests: {reason}")
        pytest.skip(reason)
    return True


# ---------------------------------------------------------------- longest files first
# `make test` hands whole test files to 2 pytest-xdist workers as they free up (--dist loadfile:
# a module's fixtures are built once). A long file started last keeps one worker busy while the
# other idles, so each run stores its tests' durations in pytest's cache and the next run
# orders the files longest first (tests keep their order within a file; new files go last, and
# a first run keeps the collection order).
DURATIONS_KEY = "sdgdml/durations"


def pytest_collection_modifyitems(config, items):
    cache = getattr(config, "cache", None)       # None with -p no:cacheprovider
    known = cache.get(DURATIONS_KEY, {}) if cache else {}
    if not known or not _under_xdist(config):
        return
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    ranked = sorted(files.values(), key=lambda its: -sum(known.get(it.nodeid, 0.0) for it in its))
    items[:] = [item for its in ranked for item in its]


def _under_xdist(config) -> bool:
    return hasattr(config, "workerinput")


_durations: dict[str, float] = {}


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    cache = getattr(session.config, "cache", None)
    if not _under_xdist(session.config) and cache and _durations:
        cache.set(DURATIONS_KEY, {**cache.get(DURATIONS_KEY, {}), **_durations})
