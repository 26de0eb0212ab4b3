"""How fast one training step runs: mixed precision (``--precision``), channels-last memory
layout (``--channels_last``), compiled modules (``--compile``), the number of data-loading
workers (``--num_workers``) and reduced-size JPEG decoding (``--jpeg_draft``).

What runs in reduced precision: only the network's forward (backbone and embedding head) under
``torch.autocast``; its output is cast back to fp32 before anything else sees it. What stays
fp32, and why:

- proxies and every other loss parameter: they are tiny, and their updates (lr x100 in the
  proxy recipes) would lose their low bits in bf16 (8 mantissa bits);
- the losses: they take exp/log-sum-exp of scaled cosines (ProxyAnchor's alpha = 32, softmax
  scales of 16-64) where a bf16 rounding of a cosine (about 4e-3) is a 10% change of a term;
- the L2 normalisation of the embeddings (``F.normalize`` on fp32 values; the head's output is
  cast up first) and every plug-in's geometry (SEE's reflections, CenterPolar's centres);
- the k-NN scores of the evaluation: embeddings are stored as fp32 (``evaluation.embed_split``)
  and the cosine matrix is computed in fp32, so ranks and ties are not decided by rounding.

Evaluation embeds under the same autocast as training (``Algorithm.embed``). fp16 needs a
gradient scaler (``torch.amp.GradScaler``: losses are scaled up before backward and steps with
inf/NaN gradients skipped); bf16 has fp32's exponent range and needs none.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil

import torch
import torch.nn as nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger("sdgdml")


class Precision:
    """The autocast context and the backward/optimiser step of one precision on one device.

    ``sync``: called with the gradients after backward and before the optimiser step (the
    distributed gradient average, ``distributed.OverlappedAverage``: it waits for the
    reductions started during backward); None on one process."""

    def __init__(self, name: str = "fp32", device: torch.device | str = "cpu", sync=None):
        if name not in PRECISIONS:
            raise ValueError(f"unknown precision {name!r}; known: {', '.join(PRECISIONS)}")
        self.name, self.device = name, torch.device(device)
        self.dtype = PRECISIONS[name]
        self.sync = sync
        self.scaler = (torch.amp.GradScaler(self.device.type) if name == "fp16" else None)

    def autocast(self):
        """Reduced precision for what runs inside (the network's forward); a no-op in fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      module: nn.Module, clip_value: float = 0.0) -> None:
        """zero_grad, backward (scaled in fp16), gradient sync across processes, clipping of
        each gradient element to [-clip_value, clip_value] (0: off; on unscaled gradients),
        step."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            if self.sync is not None:
                self.sync(module)
            _clip(optimizer, clip_value)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if self.sync is not None:
            self.sync(module)           # every process then sees the same infs: same skips
        if clip_value > 0:
            self.scaler.unscale_(optimizer)
            _clip(optimizer, clip_value)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {} if self.scaler is None else {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _clip(optimizer: torch.optim.Optimizer, clip_value: float) -> None:
    if clip_value > 0:
        torch.nn.utils.clip_grad_value_([p for g in optimizer.param_groups for p in g["params"]],
                                        clip_value)


def compile_unavailable(device: torch.device, backend: str = "inductor") -> str | None:
    """Why ``torch.compile`` cannot run here (None: it can): no Dynamo on this Python; for
    inductor, no C++ compiler for CPU code or no Triton for GPU code."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python/platform"
    if backend != "inductor":
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    cxx = os.environ.get("CXX", "g++")
    return None if shutil.which(cxx) else f"no C++ compiler ({cxx}) on PATH"


def check_compile_backend(backend: str | None) -> None:
    """``--compile BACKEND`` names a registered torch.compile backend (checked before the run
    folder exists: a wrong name would otherwise fail at the first step)."""
    if not backend:
        return
    import torch._dynamo

    from .validation import InvalidValueError

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise InvalidValueError(f"--compile {backend}: unknown backend; known: inductor, "
                                f"aot_eager, eager, cudagraphs (all: {', '.join(known)})")


def configure(algorithm: nn.Module, precision: str, channels_last: bool,
              compile_backend: str | None, device: torch.device, sync=None) -> bool:
    """Apply the speed flags to an algorithm (before its checkpoint is loaded): its
    :class:`Precision`, the network in channels-last layout, and with ``compile_backend``
    the network compiled in place (``nn.Module.compile``: the state_dict keys stay the same,
    so checkpoints are interchangeable with eager runs). Where compiling is unavailable, one
    line says why and the run stays eager. Returns whether it compiled.

    What else is compiled is the algorithm's choice (``Algorithm.compile_parts``): the loss
    composition's largest part whose components all compile without recompiles after warm-up
    (static shapes: masks instead of shape-changing selections), at least the base loss
    (``MetricLoss.bare()``: what plug-ins call on the batch and on synthetic embeddings; a
    plug-in's second batch size makes Dynamo mark the batch dimension dynamic once). A
    component that cannot be compiled states why in one line (``EAGER_REASON``, logged here)
    and runs eager; ``tests/test_host_reads.py`` checks both for every registered algorithm.
    CUDA graphs (``mode="reduce-overhead"``) are not used: shapes change with the curricula."""
    algorithm.precision = Precision(precision, device, sync)
    if channels_last:
        algorithm.network.to(memory_format=torch.channels_last)
    if not compile_backend:
        return False
    why = compile_unavailable(device, compile_backend)
    if why:
        log.warning("--compile: %s; running eager", why)
        return False
    modules, eager = algorithm.compile_parts()
    for module in modules:
        module.compile(backend=compile_backend)
    for name, reason in eager.items():
        log.info("--compile: %s runs eager: %s", name, reason)
    return True


def default_num_workers(has_files: bool) -> int:
    """Data-loading workers when ``--num_workers`` is not given: 0 for datasets held in memory
    (DigitsDG: a worker would only add start-up time), else the CPUs the job really has minus
    one for the training process: Slurm's ``SLURM_CPUS_PER_TASK``, else the process's CPU
    affinity (what ``taskset``/cgroups allow, not the machine's count)."""
    if not has_files:
        return 0
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    cpus = int(slurm) if slurm and slurm.isdigit() else len(os.sched_getaffinity(0))
    return max(0, cpus - 1)


def has_files(dataset) -> bool:
    """Whether the run's source images are files on disk (not arrays in memory)."""
    from .datasets.samples import FileSamples

    return isinstance(dataset.domain(dataset.source), FileSamples)


def enable_jpeg_draft(dataset, image_size: int) -> None:
    """``--jpeg_draft``: decode the dataset's JPEG files at a reduced size whose short side is
    still >= 2 x ``image_size``. A random-resized crop of at least a quarter of the image's
    side, or the evaluation's resize to image_size / 0.875, then still samples from >= as many
    pixels as it outputs; the DCT-domain downscale is a good low-pass filter, so the crop
    barely changes (measured in tests/test_speed.py::test_jpeg_draft_barely_changes_the_crop).
    """
    from .datasets.samples import FileSamples

    for domain in dict.fromkeys([dataset.source, *dataset.targets]):
        samples = dataset.domain(domain)
        if isinstance(samples, FileSamples):
            samples.draft_size = 2 * image_size
