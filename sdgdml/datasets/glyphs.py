"""GlyphsDG: an embedded benchmark with hundreds of classes (characters) and seven domains.

Made only from the font files matplotlib ships (``mpl-data/fonts/ttf``): nothing is downloaded.
Each class is a character; each image one rendering of it, 32x32 RGB.

**Typefaces.** Four families, each in its four variants (regular, bold, oblique/italic, bold
oblique): DejaVu Sans (the source), DejaVu Serif, DejaVu Sans Mono and STIX General (a Times-like
serif of another foundry). The Computer Modern files (``cm*.ttf``) cover only ASCII (130 code
points), so a class set common to them would be too small; they are not used.

**Classes** (:func:`measure_classes`): the letters, digits, punctuation and symbols of Basic
Latin, Latin-1, Latin Extended-A, Greek and Cyrillic (plus Ґ/ґ) that every one of the 16 font
files has in its cmap, then two measured rules on the source face (DejaVu Sans regular,
rendered as the generator renders it, no jitter):

- *ink*: a glyph covering less than ``MIN_INK`` of the image's area (dots, accents alone,
  quotes, dashes) is dropped: it would not survive the low-resolution domain;
- *look-alikes*: letters and digits first, then punctuation and symbols, each in code-point
  order, a character is dropped when its rendering correlates with an already kept
  character's at ``SIMILARITY_THRESHOLD`` or more (cosine similarity of the rendered images,
  maximised over the +-2 px position jitter the domains use). So Greek Alpha and Cyrillic A
  are dropped for Latin A (similarity 1.0), l for I (0.98), most accented letters for their
  base letter; O / 0 (0.60) and V / v (0.87) stay apart: their renderings differ in shape or
  size.

The kept characters are put in a fixed order (a permutation seeded by ``BUILD_SEED``, so
that seen and unseen classes mix scripts) and recorded in ``CLASS_CHARS``; a test checks that
the rules, rerun on the installed fonts, give exactly this list. The first half is seen
(training), the second half unseen (evaluation only).

**Domains** (``DOMAINS``; all vary position +-2 px, scale 0.85-1.1, rotation +-8 degrees, stroke
weight (the bold variants, and a 1 px erosion/dilation at twice the resolution) and the
family's four variants; ink and paper grey levels vary):

- ``sans`` (source), ``serif``, ``mono``, ``stix``: the four families, dark on light;
- ``elastic``: DejaVu Sans with a smooth random displacement field (hand-drawn-like strokes;
  elastic distortion, Simard et al., ICDAR 2003);
- ``outline``: DejaVu Sans as a dark coloured outline on a light coloured, textured background;
- ``lowres``: DejaVu Sans reduced to 10-14 px and enlarged back (blurred, aliased).

**Size**: ``SOURCE_PER_CLASS`` images per class in the source, ``TARGET_PER_CLASS`` in each
target. Deterministic: every (domain, class) has its own random stream from ``BUILD_SEED``, so
any subset of classes renders to the same arrays as the full build. Generated on first use and
cached under ``$SDGDML_CACHE_DIR/GlyphsDG/<key>/`` (one ``.npz`` per domain, written
atomically) with ``fonts.json`` recording the font files (sha256, version), matplotlib,
Pillow and FreeType versions; the key hashes them all, so other fonts never reuse a cache.
"""
from __future__ import annotations

import functools
import hashlib
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from . import array_cache
from . import transforms as T
from .base import SDGDataset
from .registry import register_dataset
from .samples import ArraySamples, DatasetError


BUILD_SEED = 20261206
VERSION = 2                 # bump when the construction below changes (a new cache key)
SIZE = 32
CANVAS = 64                 # glyphs are rendered and transformed at 2x, then box-reduced
FONT_PX = 40                # em size on the canvas
BASELINE = 0.68             # baseline height, fraction of the canvas from the top
SOURCE_PER_CLASS = 60
TARGET_PER_CLASS = 40
MIN_INK = 0.02              # the ink rule: fraction of the 32x32 image's area
SIMILARITY_THRESHOLD = 0.9  # the look-alike rule
SHIFT = 2                   # position jitter (px at 32); the look-alike rule maximises over it
SCALE = (0.85, 1.1)
ROTATION = 8.0              # degrees, either way

FAMILIES = {
    "sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
             "DejaVuSans-BoldOblique.ttf"),
    "serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
              "DejaVuSerif-BoldItalic.ttf"),
    "mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
             "DejaVuSansMono-BoldOblique.ttf"),
    "stix": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
             "STIXGeneralBolIta.ttf"),
}
# domain -> (family, rendering style)
DOMAIN_STYLES = {"sans": ("sans", "plain"), "serif": ("serif", "plain"),
                 "mono": ("mono", "plain"), "stix": ("stix", "plain"),
                 "elastic": ("sans", "elastic"), "outline": ("sans", "outline"),
                 "lowres": ("sans", "lowres")}
SOURCE_FACE = FAMILIES["sans"][0]
CANDIDATE_BLOCKS = ((0x21, 0x7F), (0xA1, 0x180), (0x370, 0x400), (0x400, 0x460), (0x490, 0x492))

# The output of measure_classes() on matplotlib's fonts, in the seen/unseen order (checked by
# tests/test_glyphs.py): fixed here so that the class list is known without rendering.
CLASS_CHARS = tuple(
    'Œω¡7L§Ĳåдлyνщpd[ЩЖÆλvЮσϟF@%N$п/®µ9ŔïζЫ+^?W«ήΞhюЂ3ЌÏmΔxEя³љњ|ĉîìkM=ϞЛэЏ'
    'Эв#VπϐЉ2<SŊK×ůrcÞ϶÷J\\Ϛϝ0δφAΊ¶Tč©sæ±зYЎΏDZq8fuº]6}ϱϒðazªυ)íΠ¢τΣX½»ςŉ¿ИO'
    'BχϑъPξЃΰШмД¾£¬&βфκC¤oIGшgиØ4έeгЯΐц(¼ыџņßřŀнΨϡ1ЊίϖtγϵΦœ5U¥жH{Цάĵϰ¦ЪįЧΓч'
    'ľñw>bϠђ*'
)


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _all_font_files() -> tuple[str, ...]:
    return tuple(f for faces in FAMILIES.values() for f in faces)


@functools.lru_cache(maxsize=None)
def _font(file: str) -> ImageFont.FreeTypeFont:
    path = font_dir() / file
    if not path.is_file():
        raise DatasetError(f"GlyphsDG needs matplotlib's font file {path} (pip install "
                           f"matplotlib)")
    return ImageFont.truetype(str(path), FONT_PX)


@functools.lru_cache(maxsize=None)
def _cmap(file: str) -> frozenset[int]:
    """The code points the font file maps to a glyph (its character map)."""
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(str(font_dir() / file)).get_charmap())


@functools.lru_cache(maxsize=4096)
def render_image(char: str, file: str) -> Image.Image:
    """The glyph's coverage on the CANVAS, 8-bit (centred horizontally, on the baseline)."""
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(canvas).text((CANVAS / 2, CANVAS * BASELINE), char, fill=255,
                                font=_font(file), anchor="ms")
    return canvas


def render(char: str, file: str) -> np.ndarray:
    return np.asarray(render_image(char, file))


def _reduce(mask: np.ndarray) -> np.ndarray:
    """CANVAS -> SIZE by box averaging, float in [0, 1]."""
    k = CANVAS // SIZE
    return mask.reshape(SIZE, k, SIZE, k).mean(axis=(1, 3), dtype=np.float64) / 255.0


def candidate_chars() -> list[str]:
    """Letters, digits, punctuation and symbols of the candidate blocks that every font file
    used has."""
    common = frozenset.intersection(*(_cmap(f) for f in _all_font_files()))
    return [chr(c) for c in sorted(common)
            if any(a <= c < b for a, b in CANDIDATE_BLOCKS)
            and unicodedata.category(chr(c))[0] in "LNPS"]


def shifted_similarity(a: np.ndarray, b: np.ndarray, shift: int = SHIFT) -> np.ndarray:
    """(len(a), len(b)) cosine similarity of images, each pair maximised over shifts of b by up
    to ``shift`` px either way (then symmetrised when a is b)."""
    n = len(b)
    pad = np.pad(b, ((0, 0), (shift, shift), (shift, shift)))
    h, w = a.shape[1:]
    shifted = np.stack([pad[:, shift + dy:shift + dy + h, shift + dx:shift + dx + w]
                        for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)], 1)
    shifted = shifted.reshape(n, -1, h * w)
    shifted = shifted / np.maximum(np.linalg.norm(shifted, axis=2, keepdims=True), 1e-12)
    flat = a.reshape(len(a), -1)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    return (flat @ shifted.reshape(-1, h * w).T).reshape(len(a), n, -1).max(axis=2)


def source_renderings(chars) -> np.ndarray:
    """The characters in the source face, no jitter, at SIZE: float (n, 32, 32)."""
    return np.stack([_reduce(render(c, SOURCE_FACE)) for c in chars])


def measure_classes() -> tuple[str, ...]:
    """The class list by the module docstring's rules (ink, then look-alikes: letters and
    digits before punctuation and symbols, each in code-point order), in the fixed seeded
    order."""
    chars = sorted(candidate_chars(), key=lambda c: (unicodedata.category(c)[0] not in "LN",
                                                     ord(c)))
    images = source_renderings(chars)
    ink = images.mean(axis=(1, 2))
    chars = [c for c, i in zip(chars, ink) if i >= MIN_INK]
    images = images[ink >= MIN_INK]
    sim = shifted_similarity(images, images)
    sim = np.maximum(sim, sim.T)
    kept: list[int] = []
    for i in range(len(chars)):
        if not kept or sim[i, kept].max() < SIMILARITY_THRESHOLD:
            kept.append(i)
    order = np.random.default_rng(BUILD_SEED).permutation(len(kept))
    return tuple(chars[kept[i]] for i in order)


# --------------------------------------------------------------------------------- rendering
def _jittered(char: str, file: str, rng: np.random.Generator) -> np.ndarray:
    """One rendering with position, scale, rotation and stroke-weight jitter, on the canvas."""
    img = render_image(char, file)
    scale = rng.uniform(*SCALE)
    angle = np.deg2rad(rng.uniform(-ROTATION, ROTATION))
    dx, dy = rng.uniform(-SHIFT, SHIFT, 2) * (CANVAS // SIZE)
    # output pixel p -> input pixel c + R(-angle) (p - c - d) / scale
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    c = CANVAS / 2
    ox, oy = c + dx, c + dy
    data = (cos, sin, c - cos * ox - sin * oy, -sin, cos, c + sin * ox - cos * oy)
    img = img.transform(img.size, Image.AFFINE, data, resample=Image.BILINEAR)
    mask = np.asarray(img)
    weight = rng.integers(3)
    if weight == 1:
        mask = _rank3(mask, np.maximum)
    elif weight == 2:
        mask = _rank3(mask, np.minimum)
    return mask


def _rank3(mask: np.ndarray, op) -> np.ndarray:
    """3x3 grey dilation (``np.maximum``) or erosion (``np.minimum``), zero outside."""
    p = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), mask.dtype)
    p[1:-1, 1:-1] = mask
    rows = op(op(p[:-2], p[1:-1]), p[2:])
    return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _upsampling(coarse: int, fine: int) -> np.ndarray:
    """(fine, coarse): bilinear enlargement along one axis, corners aligned."""
    x = np.linspace(0, coarse - 1, fine)[:, None]
    return np.clip(1 - np.abs(x - np.arange(coarse)), 0, 1)


_GRID = np.mgrid[:CANVAS, :CANVAS].astype(np.float64)
_FIELD_UP = _upsampling(5, CANVAS)
_TEXTURE_UP = _upsampling(4, SIZE)


def _elastic(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement (coarse 5x5 noise, bilinearly enlarged), ~3 px at 32."""
    field = _FIELD_UP @ rng.normal(0.0, 2.5, (2, 5, 5)) @ _FIELD_UP.T
    return ndimage.map_coordinates(mask.astype(np.float64), _GRID + field, order=1,
                                   mode="constant").astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The glyph's contour, about 1.5 px wide at 32 (dilation minus erosion at 2x)."""
    grown = _rank3(_rank3(mask, np.maximum), np.maximum).astype(np.int16)
    return np.clip(grown - _rank3(mask, np.minimum), 0, 255).astype(np.uint8)


def _lowres(cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = int(rng.choice([10, 12, 14]))
    small = Image.fromarray((cov * 255).astype(np.uint8)).resize((side, side), Image.BOX)
    return np.asarray(small.resize((SIZE, SIZE), Image.BILINEAR), np.float64) / 255.0


def _texture(rng: np.random.Generator) -> np.ndarray:
    texture = rng.normal(0, 28, (3, 4, 4))
    return np.moveaxis(_TEXTURE_UP @ texture @ _TEXTURE_UP.T, 0, -1)


def _paint(cov: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Coverage in [0, 1] -> uint8 RGB: dark ink on light paper, or colours for ``outline``."""
    if style == "outline":      # a dark colour on a light, textured colour (polarity kept)
        fg = rng.uniform(0, 110, 3)
        paper = rng.uniform(150, 255, 3) + _texture(rng)
    else:
        fg = np.full(3, rng.uniform(0, 80))
        paper = np.full((SIZE, SIZE, 3), rng.uniform(180, 255))
    out = cov[..., None] * fg + (1 - cov[..., None]) * paper
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render_sample(char: str, domain: str, rng: np.random.Generator) -> np.ndarray:
    """One image of ``char`` in ``domain``: uint8 (32, 32, 3)."""
    family, style = DOMAIN_STYLES[domain]
    faces = FAMILIES[family]
    mask = _jittered(char, faces[rng.integers(len(faces))], rng)
    if style == "elastic":
        mask = _elastic(mask, rng)
    elif style == "outline":
        mask = _outline(mask)
    cov = _reduce(mask)
    if style == "lowres":
        cov = _lowres(cov, rng)
    return _paint(cov, style, rng)


def per_class(domain: str) -> int:
    return SOURCE_PER_CLASS if domain == GlyphsDG.DEFAULT_SOURCE else TARGET_PER_CLASS


def generate_domain(domain: str, class_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 32, 32, 3), labels) of ``domain`` for the given class ids (default
    all), each class from its own stream seeded by (BUILD_SEED, domain, code point)."""
    d = GlyphsDG.DOMAINS.index(domain)
    ids = range(len(CLASS_CHARS)) if class_ids is None else class_ids
    images, labels = [], []
    for k in ids:
        rng = np.random.default_rng([BUILD_SEED, d, ord(CLASS_CHARS[k])])
        images += [render_sample(CLASS_CHARS[k], domain, rng) for _ in range(per_class(domain))]
        labels += [k] * per_class(domain)
    return np.stack(images), np.asarray(labels, np.int64)


# ------------------------------------------------------------------------------------ cache
def check_fonts() -> None:
    """Every class exists in every font file used (fonts of another matplotlib might not)."""
    for f in _all_font_files():
        missing = [c for c in CLASS_CHARS if ord(c) not in _cmap(f)]
        if missing:
            raise DatasetError(f"GlyphsDG: the font file {font_dir() / f} lacks the characters "
                               f"{''.join(missing)!r} (another matplotlib version?)")


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """The font files (sha256, version) and the libraries that rendered them."""
    import matplotlib
    import PIL
    from matplotlib.ft2font import FT2Font
    from PIL import features

    fonts = {}
    for f in _all_font_files():
        data = (font_dir() / f).read_bytes()
        fonts[f] = {"sha256": hashlib.sha256(data).hexdigest(),
                    "version": FT2Font(str(font_dir() / f)).get_sfnt().get((3, 1, 0x409, 5), b"")
                    .decode("utf-16-be", "replace")}
    return {"glyphs_version": VERSION, "build_seed": BUILD_SEED, "classes": "".join(CLASS_CHARS),
            "per_class": {d: per_class(d) for d in GlyphsDG.DOMAINS},
            "font_dir": str(font_dir()), "fonts": fonts,
            "matplotlib": matplotlib.__version__, "pillow": PIL.__version__,
            "freetype": features.version("freetype2"), "numpy": np.__version__}


def cache_folder() -> Path:
    return array_cache.cache_folder(
        "GlyphsDG", {k: v for k, v in provenance().items() if k != "font_dir"})


def _generate(domain: str) -> dict[str, np.ndarray]:
    check_fonts()
    images, labels = generate_domain(domain)
    return {"images": images, "labels": labels}


@functools.lru_cache(maxsize=None)
def load_domain_arrays(domain: str) -> tuple[np.ndarray, np.ndarray]:
    """The domain's arrays: from the cache, else generated (and cached)."""
    arrays = array_cache.cached_arrays(cache_folder() / f"{domain}.npz",
                                       lambda: _generate(domain), "fonts.json", provenance(),
                                       f"GlyphsDG's {domain} domain")
    return arrays["images"], arrays["labels"]


@register_dataset
class GlyphsDG(SDGDataset):
    """Embedded characters benchmark; ``data_dir`` is not used (fonts ship with matplotlib)."""

    NAME = "GlyphsDG"
    DOMAINS = tuple(DOMAIN_STYLES)
    CLASSES = tuple(f"U+{ord(c):04X} {c}" for c in CLASS_CHARS)
    DEFAULT_SOURCE = "sans"
    DEFAULT_EPOCHS = 30
    NEEDS_DATA_DIR = False

    def load_domain(self, domain: str) -> ArraySamples:
        images, labels = load_domain_arrays(domain)
        return ArraySamples(domain, images, labels)

    def train_transform(self, image_size: int, data_config: dict | None = None):
        return T.digits_train(image_size)     # no flip: a mirrored glyph is another glyph

    def eval_transform(self, image_size: int, data_config: dict | None = None):
        return T.digits_eval(image_size)
