"""Timing helpers shared by the benchmark scripts (not a test: nothing here asserts a speed)."""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device) -> float:
    """Wall-clock seconds of one call of fn(), device work included."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def round_robin(steps: dict, device: torch.device, repeats: int, warmup: int = 2) -> dict:
    """Median seconds per step of each named step, measured in interleaved rounds so that load
    changes on a shared machine affect every step alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            samples[name].append(seconds(step, device))
    return {name: statistics.median(v) for name, v in samples.items()}


def resnet50_step_seconds(device: torch.device, batch: int = 32, repeats: int = 3) -> float:
    """Median seconds of a timm ResNet-50 (random init) forward+backward on batch x 3 x 224^2,
    the reference step both plug-in papers compare their cost with."""
    import timm

    model = timm.create_model("resnet50", pretrained=False, num_classes=0).to(device).train()
    x = torch.randn(batch, 3, 224, 224, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    return round_robin({"r50": step}, device, repeats, warmup=1)["r50"]


def loss_step(name: str, hparams: dict, batch: int, classes: int, device: torch.device,
              epoch: float = 0.0):
    """A closure running one forward+backward of the (composed) loss ``name`` on a batch of
    L2-normalised embeddings (a leaf tensor standing in for the network output)."""
    from sdgdml.algorithms import create_loss

    torch.manual_seed(0)
    loss = create_loss(name, classes, hparams["embed_dim"], hparams).to(device)
    loss.set_progress(epoch, 1.0)
    raw = torch.randn(batch, hparams["embed_dim"], device=device, requires_grad=True)
    y = torch.randint(0, classes, (batch,), device=device)

    def step():
        raw.grad = None
        loss.zero_grad(set_to_none=True)
        loss(F.normalize(raw, dim=1), y).backward()

    return step


def train_step(name: str, hparams: dict, batch: int, classes: int, device: torch.device,
               backbone: str = "resnet50", epoch: float = 0.0):
    """A closure running one real training forward+backward: a timm ``backbone`` (random init)
    with the 512-d embedding head on batch x 3 x 224^2 images, then the loss ``name``."""
    from sdgdml.algorithms import create_loss
    from sdgdml.networks import EmbeddingNet, create_backbone

    torch.manual_seed(0)
    net = EmbeddingNet(create_backbone(backbone), hparams["embed_dim"]).to(device).train()
    loss = create_loss(name, classes, hparams["embed_dim"], hparams).to(device)
    loss.set_progress(epoch, 1.0)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.arange(batch, device=device) % classes

    def step():
        net.zero_grad(set_to_none=True)
        loss.zero_grad(set_to_none=True)
        loss(net(x), y).backward()

    return step


def count_syncs(step, device: torch.device) -> int:
    """How many operations of one call of step() make the host wait for the device (CUDA's
    sync debug mode); -1 off CUDA."""
    import warnings

    if device.type != "cuda":
        return -1
    step()
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)
