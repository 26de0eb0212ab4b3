"""One run across several processes (one per GPU): ``torchrun --nproc_per_node N -m
sdgdml.train ...``, or the Slurm launcher's ``--gpus_per_node N`` (N tasks of one job).

- Processes: the rank and world size come from torchrun's variables (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``) or from an srun step's (``SLURM_PROCID``,
  ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``); the backend is NCCL on GPUs and gloo on the CPU.
- Batches: every process draws the same *global* batch of B x N images (B = the hparam
  ``batch_size``) from the step-addressed sampler and keeps its own slice (rank r: positions
  r*B .. (r+1)*B-1), so the global batch of step t, its augmentation seeds, and so an exact
  resume, are those of a one-process run with batch B x N.
- Losses: :func:`gather_batch` concatenates every process's embeddings and labels (rank order)
  and the batch loss is computed on the whole global batch on every process (the pattern of
  pytorch-metric-learning's ``DistributedLossWrapper``: all_gather, then this process's own
  rows put back as the tensor that carries its gradient). Proxies and plug-in state see the
  global batch and stay identical on every process.
- Gradients: averaged over the processes before the optimiser step (the average DDP's
  reducer computes), overlapped with the backward pass (:class:`OverlappedAverage`: buckets
  all-reduced as soon as their gradients are complete; written here rather than DDP because
  algorithms freeze parts of the network for whole steps: warm-up, plug-ins' frozen passes,
  which DDP's reducer only tolerates with ``find_unused_parameters``). With the gathered
  rows' gradients scaled by N (:class:`_GatherRows`), the averaged gradient is exactly the
  gradient of the one-process loss on the global batch, for network and proxies alike.
- Algorithms whose every component has ``MULTI_PROCESS = True`` (loss compositions); others
  (UEM's per-process memory banks, CenterPolar's per-process pool of expanded images) are
  refused before anything is created, with their ``SINGLE_PROCESS_REASON``.
- Only rank 0 evaluates, writes records and checkpoints, and holds the run lock; the others
  resume from the same checkpoint. Buffers (BatchNorm statistics) follow rank 0's after every
  step, as DDP's ``broadcast_buffers`` does, and RNG states after every checkpoint
  (:func:`sync_rng`): a run resumed after a kill gives the uninterrupted run's records.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

last_gathered_rows = 0          # rows of the last global batch (recorded as ``loss_batch``)


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) this process was launched as (torchrun, else Slurm
    tasks, else one process)."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    # tasks of an srun step (submitit's); not a bare `python` inside an allocation of N tasks
    if int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1 and "SLURM_PROCID" in env:
        return (int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]),
                int(env.get("SLURM_LOCALID", 0)))
    return 0, 1, 0


def process_device(device_flag: str) -> torch.device | None:
    """The device this process trains on when launched as several processes
    (``cuda:LOCAL_RANK`` on GPUs, else the CPU); None on one process (the trainer's choice)."""
    _, world, local = env_world()
    if world == 1:
        return None
    cuda = device_flag.startswith("cuda") or (device_flag == "auto" and torch.cuda.is_available())
    return torch.device("cuda", local) if cuda else torch.device("cpu")


def setup(device_flag: str) -> None:
    """Join the process group when launched as several processes (once; a no-op on one)."""
    device = process_device(device_flag)
    if device is None:
        return
    rank, world, _ = env_world()
    cuda = device.type == "cuda"
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", os.environ.get("SLURM_LAUNCH_NODE_IPADDR",
                                                            "127.0.0.1"))
        os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", 0))
                                                 % 20000))
        if cuda:
            torch.cuda.set_device(device)
        # rank 0 evaluates while the others wait at their next collective: a long timeout
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(hours=2))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if world_size() > 1:
        dist.barrier()
        dist.destroy_process_group()


class _GatherRows(torch.autograd.Function):
    """all_gather of equal-sized row blocks; backward: this process's block of the incoming
    gradient, times N (so that :func:`average_gradients`' mean over processes is the sum of
    every process's share: the exact gradient of the global-batch loss)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        world, me = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(z) for _ in range(world)]
        dist.all_gather(parts, z.contiguous())
        ctx.rows, ctx.me, ctx.world = len(z), me, world
        parts[me] = z           # this process's own rows (same values), as in pml
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.me * ctx.rows:(ctx.me + 1) * ctx.rows] * ctx.world


def gather_batch(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's (z, y), concatenated in rank order: the global batch a loss sees
    (see the module doc for the gradients); (z, y) itself on one process."""
    global last_gathered_rows
    if world_size() == 1:
        last_gathered_rows = len(z)
        return z, y
    sizes = [torch.zeros(1, dtype=torch.long, device=z.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([len(z)], device=z.device))
    if len({int(s) for s in sizes}) != 1:
        raise RuntimeError(f"processes hold batches of different sizes {[int(s) for s in sizes]}")
    labels = [torch.empty_like(y) for _ in range(world_size())]
    dist.all_gather(labels, y.contiguous())
    z_all = _GatherRows.apply(z)
    last_gathered_rows = len(z_all)
    return z_all, torch.cat(labels)


BUCKET_MB = 25          # DDP's default bucket size


class OverlappedAverage:
    """The gradient average of :func:`average_gradients`, overlapped with the backward pass
    (DDP's bucketed reducer, written here so that steps may freeze parameters): the parameters
    are split, in reverse order (roughly the order backward produces their gradients), into
    buckets of ``bucket_mb``; a hook on each parameter notes when its gradient is complete, and a
    bucket whose trainable parameters are all done is all-reduced asynchronously while backward
    goes on. Buckets start strictly in index order, the same on every process (every process
    runs the same graph on the gathered batch, so the same parameters get gradients). Calling
    the object after backward (``speed.Precision``'s ``sync``) starts what is left (buckets with
    frozen or unused parameters: only the gradients that exist), waits, and writes the means
    back. An element-wise sum over the processes, then a division, as the flat all-reduce: the
    same numbers."""

    def __init__(self, module: torch.nn.Module, bucket_mb: float = BUCKET_MB):
        params = [p for p in module.parameters()][::-1]
        self.buckets: list[list[torch.nn.Parameter]] = [[]]
        size, cap = 0, bucket_mb * 2 ** 20
        for p in params:
            if self.buckets[-1] and size + p.numel() * p.element_size() > cap:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self.bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self._reset()
        for p in params:
            p.register_post_accumulate_grad_hook(self._ready)

    def _reset(self) -> None:
        self.done: list[set[int]] = [set() for _ in self.buckets]
        self.started = 0                # buckets launched, in index order
        self.works: list[tuple] = []

    def _complete(self, i: int) -> bool:
        return all(id(p) in self.done[i] for p in self.buckets[i] if p.requires_grad)

    def _ready(self, p: torch.nn.Parameter) -> None:
        self.done[self.bucket_of[id(p)]].add(id(p))
        while self.started < len(self.buckets) and self._complete(self.started):
            self._launch(self.started)

    def _launch(self, i: int) -> None:
        grads = [p.grad for p in self.buckets[i] if p.grad is not None]
        self.started = i + 1
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.works.append((dist.all_reduce(flat, async_op=True), flat, grads))

    def __call__(self, module: torch.nn.Module) -> None:
        while self.started < len(self.buckets):
            self._launch(self.started)
        for work, flat, grads in self.works:
            work.wait()
            flat /= world_size()
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
        self._reset()


def average_gradients(module: torch.nn.Module) -> None:
    """Replace every gradient by its mean over the processes (one flat all-reduce)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_rng() -> None:
    """Rank 0's RNG states (Python, NumPy, torch) on every process. Called after every
    checkpoint: only rank 0 evaluated (a DataLoader draws its base seed from torch's RNG), and
    a resumed run starts every process from rank 0's saved states, so an uninterrupted run
    must continue from them too (plug-ins draw from the global RNG: SEE's frames)."""
    if world_size() == 1:
        return
    from .runstate import rng_state, set_rng_state

    state = [rng_state() if is_main() else None]
    dist.broadcast_object_list(state, 0)
    if not is_main():
        set_rng_state(state[0])


def broadcast_state(module: torch.nn.Module, buffers_only: bool = False) -> None:
    """Rank 0's buffers (and parameters) on every process."""
    if world_size() == 1:
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(),
                                                           *module.buffers()]
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t, 0)
