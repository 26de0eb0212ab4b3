"""Image transforms: the DML standard for photos and a small-image variant for digits."""
from __future__ import annotations

from torchvision import transforms as tv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_tensor(mean=IMAGENET_MEAN, std=IMAGENET_STD):
    return [tv.ToTensor(), tv.Normalize(mean, std)]


def standard_train(image_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Random resized crop + horizontal flip (ProxyAnchor / PFML Sec. 4.1 recipe)."""
    return tv.Compose([tv.RandomResizedCrop(image_size), tv.RandomHorizontalFlip(),
                       *_to_tensor(mean, std)])


def standard_eval(image_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Resize to 256/224 of the crop size, then centre crop (256 -> 224 at full size)."""
    return tv.Compose([tv.Resize(round(image_size * 256 / 224)), tv.CenterCrop(image_size),
                       *_to_tensor(mean, std)])


def digits_train(image_size: int = 32):
    """Mild crop jitter, no flip (a flipped digit is another glyph)."""
    return tv.Compose([tv.RandomResizedCrop(image_size, scale=(0.75, 1.0), ratio=(0.9, 1.1)),
                       *_to_tensor((0.5,) * 3, (0.5,) * 3)])


def digits_eval(image_size: int = 32):
    return tv.Compose([tv.Resize(image_size), *_to_tensor((0.5,) * 3, (0.5,) * 3)])
