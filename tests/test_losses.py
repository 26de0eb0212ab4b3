"""Each baseline loss against pytorch-metric-learning and against its paper's equation,
written out independently here, on the same inputs and proxies."""
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from sdgdml.algorithms import create_loss, proxy_losses
from sdgdml.hparams_registry import default_hparams

C, D, B = 6, 16, 40


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(B, D, generator=g), dim=1).requires_grad_()
    y = torch.arange(B) % C
    return z, y


def _loss(name, **over):
    torch.manual_seed(1)
    hp = {**default_hparams(name, "DigitsDG"), **over}
    return create_loss(name, C, D, hp), hp


def _cos(z, p):
    return F.normalize(z, dim=1) @ F.normalize(p, dim=1).T


def test_proxy_anchor(batch):
    z, y = batch
    loss, hp = _loss("ProxyAnchor")
    p = loss.pml.proxies
    s, a, m = _cos(z, p), hp["pa_alpha"], hp["pa_margin"]
    pos = F.one_hot(y, C).bool()
    with_pos = pos.any(0)
    # Kim et al. 2020, Eq. 4
    pos_term = torch.log1p((torch.exp(-a * (s - m)) * pos).sum(0))[with_pos].sum() / with_pos.sum()
    neg_term = torch.log1p((torch.exp(a * (s + m)) * ~pos).sum(0)).sum() / C
    ref = pos_term + neg_term
    assert loss(z, y).item() == pytest.approx(ref.item(), rel=1e-5)
    pml = pml_losses.ProxyAnchorLoss(C, D, margin=m, alpha=a)
    pml.proxies.data.copy_(p.data)
    assert loss(z, y).item() == pytest.approx(pml(z, y).item(), rel=1e-6)


@pytest.mark.parametrize("classes_in_batch,alpha", [(C, 32.0), (C - 2, 64.0)])
def test_proxy_anchor_equals_pml_in_value_and_gradients(classes_in_batch, alpha):
    """Our Eq. 4 against pml's ProxyAnchorLoss on unnormalised embeddings: value and the
    gradients to the embeddings and the proxies; also with proxies that have no positive in
    the batch (their pos term is left out) and the largest alpha of the search space."""
    g = torch.Generator().manual_seed(3)
    z0 = 3.0 * torch.randn(B, D, generator=g)
    y = torch.arange(B) % classes_in_batch
    loss, hp = _loss("ProxyAnchor", pa_alpha=alpha)
    pml = pml_losses.ProxyAnchorLoss(C, D, margin=hp["pa_margin"], alpha=alpha)
    pml.proxies.data.copy_(loss.pml.proxies.data)
    grads = []
    for module, params in ((loss, loss.pml.proxies), (pml, pml.proxies)):
        z = z0.clone().requires_grad_()
        value = module(z, y)
        grads.append((value.detach(), *torch.autograd.grad(value, [z, params])))
    for ours, theirs in zip(*grads):        # pml's operations in its order: bit for bit
        assert torch.equal(ours, theirs)


def test_proxy_anchor_split_is_two_batches_in_one_pass(batch):
    """``split``: the losses of rows [:n] and [n:] as if computed apart (SEE's L_ML and
    L_SEE), gradients included; the second part lacks classes (its |P+| is smaller)."""
    z, y = batch
    loss, _ = _loss("ProxyAnchor")
    n = 25
    y2 = y.clone()
    y2[n:] = y2[n:] % 3
    both = loss(z, y2, split=n)
    apart = torch.stack([loss(z[:n], y2[:n]), loss(z[n:], y2[n:])])
    torch.testing.assert_close(both, apart, rtol=1e-6, atol=0)
    weights = torch.tensor([1.0, 0.3])
    grads = [torch.autograd.grad((v * weights).sum(), [z, loss.pml.proxies]) for v in (both, apart)]
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_proxy_nca(batch):
    z, y = batch
    loss, hp = _loss("ProxyNCA")
    p = loss.pml.proxies
    d2 = torch.cdist(F.normalize(z, dim=1), F.normalize(p, dim=1)) ** 2
    ref = F.cross_entropy(-hp["pnca_scale"] * d2, y)          # softmax over all proxies (++)
    assert loss(z, y).item() == pytest.approx(ref.item(), rel=1e-5)
    pml = pml_losses.ProxyNCALoss(C, D, softmax_scale=hp["pnca_scale"])
    pml.proxies.data.copy_(p.data)
    assert loss(z, y).item() == pytest.approx(pml(z, y).item(), rel=1e-6)


def test_norm_softmax(batch):
    z, y = batch
    loss, hp = _loss("NormSoftmax")
    w = loss.pml.W                                              # (d, C)
    ref = F.cross_entropy(_cos(z, w.T) / hp["nsm_temperature"], y)
    assert loss(z, y).item() == pytest.approx(ref.item(), rel=1e-5)
    pml = pml_losses.NormalizedSoftmaxLoss(C, D, temperature=hp["nsm_temperature"])
    pml.W.data.copy_(w.data)
    assert loss(z, y).item() == pytest.approx(pml(z, y).item(), rel=1e-6)


def test_soft_triple(batch):
    z, y = batch
    loss, hp = _loss("SoftTriple")
    k, lam, gamma, delta = hp["st_centers"], hp["st_lambda"], hp["st_gamma"], hp["st_margin"]
    s = _cos(z, loss.pml.fc.T).view(B, C, k)
    # Qian et al. 2019, Eq. 7-9: relaxed class similarity, then a margin softmax
    s_class = (F.softmax(s / gamma, dim=2) * s).sum(2)
    ref = F.cross_entropy(lam * (s_class - delta * F.one_hot(y, C)), y)
    assert loss(z, y).item() == pytest.approx(ref.item(), rel=1e-5)
    pml = pml_losses.SoftTripleLoss(C, D, centers_per_class=k, la=lam, gamma=gamma, margin=delta)
    pml.fc.data.copy_(loss.pml.fc.data)
    assert loss(z, y).item() == pytest.approx(pml(z, y).item(), rel=1e-6)


def test_arcface(batch):
    z, y = batch
    loss, hp = _loss("ArcFace")
    theta = torch.acos(_cos(z, loss.pml.W.T).clamp(-1, 1))
    m, s = math.radians(hp["arc_margin_deg"]), hp["arc_scale"]
    logits = torch.where(F.one_hot(y, C).bool(), torch.cos(theta + m), torch.cos(theta))
    ref = F.cross_entropy(s * logits, y)                        # Deng et al. 2019, Eq. 3
    assert loss(z, y).item() == pytest.approx(ref.item(), rel=1e-4)
    pml = pml_losses.ArcFaceLoss(C, D, margin=hp["arc_margin_deg"], scale=s)
    pml.W.data.copy_(loss.pml.W.data)
    assert loss(z, y).item() == pytest.approx(pml(z, y).item(), rel=1e-6)


def test_cosface(batch):
    z, y = batch
    loss, hp = _loss("CosFace")
    cos = _cos(z, loss.pml.W.T)
    ref = F.cross_entropy(hp["cos_scale"] * (cos - hp["cos_margin"] * F.one_hot(y, C)), y)
    assert loss(z, y).item() == pytest.approx(ref.item(), rel=1e-5)   # Wang et al. 2018, Eq. 4
    pml = pml_losses.CosFaceLoss(C, D, margin=hp["cos_margin"], scale=hp["cos_scale"])
    pml.W.data.copy_(loss.pml.W.data)
    assert loss(z, y).item() == pytest.approx(pml(z, y).item(), rel=1e-6)


def test_multi_similarity_with_mining(batch):
    z, y = batch
    loss, hp = _loss("MultiSimilarity")
    a, b, lam, eps = hp["ms_alpha"], hp["ms_beta"], hp["ms_base"], hp["ms_epsilon"]
    s = _cos(z, z).detach().double()
    total = 0.0
    for i in range(B):          # Wang et al. 2019: pair mining (Eq. 9-10), then Eq. 11 per anchor
        pos = [j for j in range(B) if j != i and y[j] == y[i]]
        neg = [k for k in range(B) if y[k] != y[i]]
        hard_pos = [j for j in pos if s[i, j] - eps < max(s[i, k] for k in neg)]
        hard_neg = [k for k in neg if s[i, k] + eps > min(s[i, j] for j in pos)]
        if hard_pos:
            total += math.log1p(sum(math.exp(-a * (s[i, j] - lam)) for j in hard_pos)) / a
        if hard_neg:
            total += math.log1p(sum(math.exp(b * (s[i, k] - lam)) for k in hard_neg)) / b
    assert loss(z, y).item() == pytest.approx(total / B, rel=1e-5)
    pml = pml_losses.MultiSimilarityLoss(alpha=a, beta=b, base=lam)
    miner = pml_miners.MultiSimilarityMiner(epsilon=eps)
    assert loss(z, y).item() == pytest.approx(pml(z, y, miner(z, y)).item(), rel=1e-6)
    assert loss.proxies() is None


@pytest.mark.parametrize("name", proxy_losses())      # the capability, not a name
def test_uniform_proxy_access(name, batch):
    z, y = batch
    loss, hp = _loss(name)
    proxies, labels = loss.proxies()
    per_class = {"SoftTriple": hp.get("st_centers"), "PFML": hp.get("pfml_m")}.get(name, 1)
    assert proxies.shape == (C * per_class, D)
    assert torch.allclose(proxies.norm(dim=1), torch.ones(len(proxies)))
    assert torch.equal(labels, torch.arange(C).repeat_interleave(per_class))
    # the proxies given out are the ones the loss uses: their gradient is the loss's
    loss(z, y).backward()
    raw = next(loss.parameters())
    assert raw.grad is not None and raw.grad.abs().sum() > 0
