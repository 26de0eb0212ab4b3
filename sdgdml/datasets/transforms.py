"""Image transforms: the DML standard for photos and a small-image variant for digits.

Photos (every real benchmark): training = random resized crop + horizontal flip, evaluation =
resize to ``image_size / crop_pct`` (256 for 224) + centre crop, ImageNet normalisation. With the
hparam ``normalization = "timm"`` the mean/std, eval crop fraction and interpolation come from
the backbone's own timm pretrained config instead (:func:`backbone_data_config`).
"""
from __future__ import annotations

# torchvision is imported where a transform is built, not at import time: importing it pulls
# in torchvision.ops and with it torch._dynamo (about 1.5 CPU-s), which commands that build no
# transform (--help, validation errors, collect, sweep) need not pay.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STANDARD_CROP_PCT = 224 / 256
NORMALIZATIONS = ("imagenet", "timm")


def _tv():
    from torchvision import transforms as tv

    return tv


def _to_tensor(mean=IMAGENET_MEAN, std=IMAGENET_STD):
    tv = _tv()
    return [tv.ToTensor(), tv.Normalize(mean, std)]


def _interpolation(name: str):
    return _tv().InterpolationMode(name)


def standard_train(image_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   crop_pct: float = STANDARD_CROP_PCT, interpolation: str = "bilinear"):
    """Random resized crop + horizontal flip (ProxyAnchor / PFML Sec. 4.1 recipe).
    ``crop_pct`` is unused here (an eval setting, accepted so one config serves both)."""
    tv = _tv()
    return tv.Compose([tv.RandomResizedCrop(image_size, interpolation=_interpolation(interpolation)),
                       tv.RandomHorizontalFlip(), *_to_tensor(mean, std)])


def standard_eval(image_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  crop_pct: float = STANDARD_CROP_PCT, interpolation: str = "bilinear"):
    """Resize the short side to ``image_size / crop_pct`` (256 for 224), then centre crop."""
    tv = _tv()
    return tv.Compose([tv.Resize(round(image_size / crop_pct),
                                 interpolation=_interpolation(interpolation)),
                       tv.CenterCrop(image_size), *_to_tensor(mean, std)])


def backbone_data_config(backbone: str) -> dict:
    """mean, std, crop_pct and interpolation of a timm backbone's pretrained config (no
    download). ImageNet defaults for backbones timm does not know (``digits_cnn``)."""
    import timm

    from ..networks import ALIASES

    name = ALIASES.get(backbone, backbone)
    cfg = timm.get_pretrained_cfg(name) if timm.is_model(name) else None
    if cfg is None:
        return {}
    interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic",
                                                               "nearest") else "bilinear"
    return {"mean": tuple(cfg.mean), "std": tuple(cfg.std), "crop_pct": float(cfg.crop_pct),
            "interpolation": interpolation}


def data_config(hparams: dict) -> dict | None:
    """The transform settings an experiment uses: None (ImageNet standard) or the backbone's
    timm config, by the hparam ``normalization``."""
    kind = hparams.get("normalization", "imagenet")
    if kind not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {kind!r}; known: {', '.join(NORMALIZATIONS)}")
    return backbone_data_config(hparams["backbone"]) if kind == "timm" else None


def digits_train(image_size: int = 32):
    """Mild crop jitter, no flip (a flipped digit is another glyph)."""
    tv = _tv()
    return tv.Compose([tv.RandomResizedCrop(image_size, scale=(0.75, 1.0), ratio=(0.9, 1.1)),
                       *_to_tensor((0.5,) * 3, (0.5,) * 3)])


class DigitsEval:
    """Resize the short side to ``image_size`` (a no-op for images of that size), to a tensor,
    normalise by mean = std = 0.5: per PIL image (``__call__``), or for a whole uint8 array
    at once (``batch``)."""

    MEAN = STD = 0.5

    def __init__(self, image_size: int = 32):
        tv = _tv()
        self.image_size = image_size
        self.per_image = tv.Compose([tv.Resize(image_size),
                                     *_to_tensor((self.MEAN,) * 3, (self.STD,) * 3)])

    def __call__(self, image):
        return self.per_image(image)

    def batch(self, images):
        """The transform of uint8 images (N, H, W, 3), as one (N, 3, H, W) float tensor, equal
        bit for bit to stacking ``__call__`` of each (the same element-wise float32 ops:
        ToTensor's /255, Normalize's -mean, /std); None when the images are not
        ``image_size`` square (the PIL resize would change them)."""
        import torch

        if images.shape[1:3] != (self.image_size, self.image_size):
            return None
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
        return x.sub_(self.MEAN).div_(self.STD)

    def __repr__(self) -> str:
        return f"DigitsEval({self.per_image!r})"


def digits_eval(image_size: int = 32) -> DigitsEval:
    return DigitsEval(image_size)


def moco_v2_train(image_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  flip: bool = True):
    """MoCo v2's augmentation (``--aug-plus``, Chen et al. 2020, arXiv 2003.04297): random
    resized crop of area 0.2-1, colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale with
    p 0.2, Gaussian blur (sigma 0.1-2, kernel ~10% of the image, odd) with p 0.5, horizontal
    flip (``flip``: off for digits, whose mirror images are other symbols)."""
    tv = _tv()
    kernel = max(3, int(0.1 * image_size) // 2 * 2 + 1)
    return tv.Compose([
        tv.RandomResizedCrop(image_size, scale=(0.2, 1.0)),
        tv.RandomApply([tv.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        tv.RandomGrayscale(p=0.2),
        tv.RandomApply([tv.GaussianBlur(kernel, (0.1, 2.0))], p=0.5),
        *([tv.RandomHorizontalFlip()] if flip else []), *_to_tensor(mean, std)])
