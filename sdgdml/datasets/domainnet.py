"""DomainNet (Peng et al., ICCV 2019; the cleaned version): 6 domains x 345 classes, 586,575
images, as distributed: ``<root>/<domain>/<class>/<file>`` plus the official lists
``<domain>_train.txt`` / ``<domain>_test.txt`` (lines ``<domain>/<class>/<file> <label>``).

Class order: the official label ids 0-344 of the list files (alphabetical, ignoring case, '_'
and '-'); every list line's label is checked against its class folder. Seen classes: ids
0-171, unseen: 172-344. Our protocol (``OFFICIAL_LISTS``): training and validation use only the
source's train list (validation = the seen-class images of its *test* list by default, i.e.
``val_protocol = "official"``), and every retrieval test set is the unseen-class images of a
domain's test list.

UEM's / UCDIR's universal cross-domain retrieval protocol ("DomainNet-7": ``--ucdr ...
--ucdr_min_images 200 --ucdr_num_classes 7``) uses one fixed set of 7 classes, chosen from the
official *training* lists of the six domains (``sdgdml.datasets.ucdr``); ``check`` prints it
with each domain's training images, beside the counts of UCDIR's script (clipart 1,959, sketch
2,091).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import VAL_OFFICIAL
from .files import DomainIndex, FileDataset, list_images, some
from .registry import register_dataset
from .samples import DatasetError
from .ucdr import ProtocolError, class_subset_report

CLASSES = (
    "aircraft_carrier", "airplane", "alarm_clock", "ambulance", "angel", "animal_migration",
    "ant", "anvil", "apple", "arm", "asparagus", "axe", "backpack", "banana", "bandage", "barn",
    "baseball", "baseball_bat", "basket", "basketball", "bat", "bathtub", "beach", "bear",
    "beard", "bed", "bee", "belt", "bench", "bicycle", "binoculars", "bird", "birthday_cake",
    "blackberry", "blueberry", "book", "boomerang", "bottlecap", "bowtie", "bracelet", "brain",
    "bread", "bridge", "broccoli", "broom", "bucket", "bulldozer", "bus", "bush", "butterfly",
    "cactus", "cake", "calculator", "calendar", "camel", "camera", "camouflage", "campfire",
    "candle", "cannon", "canoe", "car", "carrot", "castle", "cat", "ceiling_fan", "cello",
    "cell_phone", "chair", "chandelier", "church", "circle", "clarinet", "clock", "cloud",
    "coffee_cup", "compass", "computer", "cookie", "cooler", "couch", "cow", "crab", "crayon",
    "crocodile", "crown", "cruise_ship", "cup", "diamond", "dishwasher", "diving_board", "dog",
    "dolphin", "donut", "door", "dragon", "dresser", "drill", "drums", "duck", "dumbbell",
    "ear", "elbow", "elephant", "envelope", "eraser", "eye", "eyeglasses", "face", "fan",
    "feather", "fence", "finger", "fire_hydrant", "fireplace", "firetruck", "fish", "flamingo",
    "flashlight", "flip_flops", "floor_lamp", "flower", "flying_saucer", "foot", "fork", "frog",
    "frying_pan", "garden", "garden_hose", "giraffe", "goatee", "golf_club", "grapes", "grass",
    "guitar", "hamburger", "hammer", "hand", "harp", "hat", "headphones", "hedgehog",
    "helicopter", "helmet", "hexagon", "hockey_puck", "hockey_stick", "horse", "hospital",
    "hot_air_balloon", "hot_dog", "hot_tub", "hourglass", "house", "house_plant", "hurricane",
    "ice_cream", "jacket", "jail", "kangaroo", "key", "keyboard", "knee", "knife", "ladder",
    "lantern", "laptop", "leaf", "leg", "light_bulb", "lighter", "lighthouse", "lightning",
    "line", "lion", "lipstick", "lobster", "lollipop", "mailbox", "map", "marker", "matches",
    "megaphone", "mermaid", "microphone", "microwave", "monkey", "moon", "mosquito",
    "motorbike", "mountain", "mouse", "moustache", "mouth", "mug", "mushroom", "nail",
    "necklace", "nose", "ocean", "octagon", "octopus", "onion", "oven", "owl", "paintbrush",
    "paint_can", "palm_tree", "panda", "pants", "paper_clip", "parachute", "parrot", "passport",
    "peanut", "pear", "peas", "pencil", "penguin", "piano", "pickup_truck", "picture_frame",
    "pig", "pillow", "pineapple", "pizza", "pliers", "police_car", "pond", "pool", "popsicle",
    "postcard", "potato", "power_outlet", "purse", "rabbit", "raccoon", "radio", "rain",
    "rainbow", "rake", "remote_control", "rhinoceros", "rifle", "river", "roller_coaster",
    "rollerskates", "sailboat", "sandwich", "saw", "saxophone", "school_bus", "scissors",
    "scorpion", "screwdriver", "sea_turtle", "see_saw", "shark", "sheep", "shoe", "shorts",
    "shovel", "sink", "skateboard", "skull", "skyscraper", "sleeping_bag", "smiley_face",
    "snail", "snake", "snorkel", "snowflake", "snowman", "soccer_ball", "sock", "speedboat",
    "spider", "spoon", "spreadsheet", "square", "squiggle", "squirrel", "stairs", "star",
    "steak", "stereo", "stethoscope", "stitches", "stop_sign", "stove", "strawberry",
    "streetlight", "string_bean", "submarine", "suitcase", "sun", "swan", "sweater",
    "swing_set", "sword", "syringe", "table", "teapot", "teddy-bear", "telephone", "television",
    "tennis_racquet", "tent", "The_Eiffel_Tower", "The_Great_Wall_of_China", "The_Mona_Lisa",
    "tiger", "toaster", "toe", "toilet", "tooth", "toothbrush", "toothpaste", "tornado",
    "tractor", "traffic_light", "train", "tree", "triangle", "trombone", "truck", "trumpet",
    "t-shirt", "umbrella", "underwear", "van", "vase", "violin", "washing_machine",
    "watermelon", "waterslide", "whale", "wheel", "windmill", "wine_bottle", "wine_glass",
    "wristwatch", "yoga", "zebra", "zigzag")
LIST_PARTS = ("train", "test")
# UCDIR's DomainNet-7 (github conghuihu/UCDIR, scripts/domainnet_clipart-sketch.sh of its first
# release: folders domainNet-7/<domain>, --mocok-A 1959 --mocok-B 2091, --num-cluster 7): the
# rule's parameters (UCDIR/UEM papers: the 7 classes with more than 200 images) and the script's
# training-image counts, for comparison
UCDR7_MIN_IMAGES, UCDR7_NUM_CLASSES = 200, 7
UCDIR_TRAIN_IMAGES = {"clipart": 1959, "sketch": 2091}


@register_dataset
class DomainNet(FileDataset):
    NAME = "DomainNet"
    DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    CLASSES = CLASSES
    DEFAULT_SOURCE = "real"
    VAL_PROTOCOL = VAL_OFFICIAL
    OFFICIAL_LISTS = True
    DEFAULT_EPOCHS = 10
    ROOTS = ("domain_net", "DomainNet", "domainnet")
    LIST_DIRS = ("", "txt", "splits")       # where the list files may sit, under the root
    LAYOUT = ("{root}/<domain>/<class>/<file>, with the official lists "
              "{root}/<domain>_train.txt and {root}/<domain>_test.txt "
              "(lines '<domain>/<class>/<file> <label>')")
    EXPECTED_IMAGES = {"clipart": 48129, "infograph": 51605, "painting": 72266,
                       "quickdraw": 172500, "real": 172947, "sketch": 69128}
    DOWNLOAD = ("http://ai.bu.edu/M3SDA/ (cleaned version: <domain>.zip and the "
                "<domain>_train.txt / <domain>_test.txt lists)")

    def list_file(self, domain: str, part: str) -> Path:
        """The official list (the first candidate location when none exists)."""
        candidates = [self.root / d / f"{domain}_{part}.txt" for d in self.LIST_DIRS]
        return next((c for c in candidates if c.is_file()), candidates[0])

    def fingerprint_paths(self, domain: str) -> list[Path]:
        folder = self.root / domain
        return [*(self.list_file(domain, p) for p in LIST_PARTS), folder,
                *(folder / c for c in self.CLASSES)]

    def _read_list(self, domain: str, part: str, index: DomainIndex,
                   named: set[str]) -> list[tuple]:
        """(relative path, label, is_test) of every valid line of one official list; every
        path the list names (valid line or not) goes into ``named``."""
        path = self.list_file(domain, part)
        if not path.is_file():
            index.problems.append(f"official list file not found: {path} (also looked in "
                                  f"{', '.join(d + '/' for d in self.LIST_DIRS if d)})")
            return []
        class_id = {c: i for i, c in enumerate(self.CLASSES)}
        entries, bad = [], []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            rel, _, label = line.strip().rpartition(" ")
            named.add(rel)
            parts = rel.split("/")
            if not label.lstrip("-").isdigit() or len(parts) != 3 or parts[0] != domain:
                bad.append(f"line {n} {line.strip()!r} is not '{domain}/<class>/<file> <label>'")
            elif parts[1] not in class_id or class_id[parts[1]] != int(label):
                bad.append(f"line {n}: label {label} for class folder {parts[1]!r} "
                           f"(whose label is {class_id.get(parts[1], 'unknown')})")
            else:
                entries.append((rel, int(label), part == "test"))
        if bad:
            index.problems.append(f"{len(bad)} bad lines in {path}: {some(bad, 5)}")
        return entries

    def build_index(self, domain: str) -> DomainIndex:
        folder = self.root / domain
        index = DomainIndex(domain, str(folder))
        problem = self.root_problem()
        if problem:
            index.problems.append(problem)
            return index
        named: set[str] = set()
        entries = [e for part in LIST_PARTS for e in self._read_list(domain, part, index, named)]
        if not folder.is_dir():
            index.problems.append(f"domain folder not found: {folder}")
            return index
        on_disk = {c: set(list_images(folder / c)) if (folder / c).is_dir() else set()
                   for c in self.CLASSES}
        listed, missing, twice, flags = set(), [], [], []
        for rel, label, is_test in entries:
            if rel in listed:
                twice.append(rel)
                continue
            listed.add(rel)
            _, class_dir, name = rel.split("/")
            if name not in on_disk[class_dir]:
                missing.append(rel)
                continue
            index.paths.append(str(self.root / rel))
            index.labels.append(label)
            flags.append(is_test)
        index.official_test = flags
        if missing:
            no_folder = sorted({r.split("/")[1] for r in missing} - {
                c for c in self.CLASSES if (folder / c).is_dir()})
            index.problems.append(
                f"{len(missing)} of the {len(listed)} images in the official lists are missing "
                f"under {self.root}: {some(missing)}"
                + (f"; class folders missing: {some(no_folder)}" if no_folder else ""))
        if twice:
            index.warnings.append(f"{len(twice)} images listed twice (used once): {some(twice)}")
        unlisted = sum(f"{domain}/{c}/{name}" not in named for c, names in on_disk.items()
                       for name in names)
        if unlisted:
            index.warnings.append(f"{unlisted} image files under {folder} are in neither "
                                  f"official list (not used)")
        return index

    def training_class_counts(self, domain: str) -> np.ndarray:
        """Images per class in ``domain``'s official train list (read from the list file: no
        image folder is walked)."""
        index = DomainIndex(domain, str(self.root / domain))
        entries = self._read_list(domain, "train", index, set())
        if index.problems:
            raise DatasetError(f"{self.NAME}: {'; '.join(index.problems)}")
        return np.bincount([label for _, label, _ in entries], minlength=len(self.CLASSES))

    def check(self, domains: list[str] | None = None, verify: bool = True) -> tuple[bool, str]:
        """``FileDataset.check``, its report followed by the DomainNet-7 class set."""
        ok, report = super().check(domains, verify)
        return ok, f"{report}\n{self.ucdr7_report()}"

    def ucdr7_report(self) -> str:
        """DomainNet-7 of the UCDR protocol (``sdgdml.datasets.ucdr``) with each domain's
        training images per class, beside UCDIR's counts."""
        head = (f"DomainNet-7 (--ucdr_min_images {UCDR7_MIN_IMAGES} --ucdr_num_classes "
                f"{UCDR7_NUM_CLASSES}; one set for every domain pair): the "
                f"{UCDR7_NUM_CLASSES} classes with more than {UCDR7_MIN_IMAGES} training "
                f"images in every domain, largest smallest count first")
        try:
            table = class_subset_report(self, UCDR7_MIN_IMAGES, UCDR7_NUM_CLASSES,
                                        reference=UCDIR_TRAIN_IMAGES)
        except (ProtocolError, DatasetError) as e:
            return f"{head}: not available ({e})"
        return (f"{head}.\nTraining images (official train lists); 'reference': UCDIR's "
                f"script, folders domainNet-7/<domain>:\n{table}")
