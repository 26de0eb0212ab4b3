"""Benchmarks distributed as ``<domain>/<class>/<image>`` folders: PACS, Office-Home,
Office-31 (``<domain>/images/<class>/<image>``), and every dataset a user registers from a
config file (:mod:`sdgdml.datasets.config`).

Classes are in the alphabetical order of their folder names (Python's ``sorted``, the
torchvision ``ImageFolder`` convention, which is also PACS's official label order 1-7); the
first half are seen (training) classes, the rest unseen. No official list files are used:
every image of a class folder belongs to the domain. Facts: see README "Datasets".
"""
from __future__ import annotations

from pathlib import Path

from .files import DomainIndex, FileDataset, scan_class_folders
from .registry import register_dataset


class ImageFolderDataset(FileDataset):
    """``<root>/<domain folder>/[IMAGES_SUBDIR/]<class folder>/<image>``.

    ``DOMAIN_DIRS`` maps a domain to candidate folder names (default: the domain's name);
    ``CLASS_DIRS`` are the class folder names in label order (default: ``CLASSES``)."""

    DOMAIN_DIRS: dict[str, tuple[str, ...]] = {}
    IMAGES_SUBDIR: str = ""
    CLASS_DIRS: tuple[str, ...] = ()
    LAYOUT = "{root}/<domain>/<class>/<image>"

    @property
    def class_dirs(self) -> tuple[str, ...]:
        return self.CLASS_DIRS or self.CLASSES

    def domain_dir(self, domain: str) -> Path:
        """``paths[domain]`` if configured, else the first candidate folder that exists."""
        if domain in self.paths:
            return self.resolve(self.paths[domain])
        candidates = self.DOMAIN_DIRS.get(domain, (domain,))
        for name in candidates:
            if (self.root / name).is_dir():
                return self.root / name
        return self.root / candidates[0]

    def class_root(self, domain: str) -> Path:
        return self.domain_dir(domain) / self.IMAGES_SUBDIR

    def fingerprint_paths(self, domain: str) -> list[Path]:
        folder = self.class_root(domain)
        return [self.domain_dir(domain), folder, *(folder / c for c in self.class_dirs)]

    def build_index(self, domain: str) -> DomainIndex:
        folder = self.class_root(domain)
        index = DomainIndex(domain, str(folder))
        problem = self.root_problem()
        if problem:
            index.problems.append(problem)
            return index
        if not self.domain_dir(domain).is_dir():
            tried = self.DOMAIN_DIRS.get(domain, (domain,))
            index.problems.append(
                f"domain folder not found: {self.domain_dir(domain)}"
                + (f" (tried {', '.join(repr(t) for t in tried)} in {self.root})"
                   if len(tried) > 1 else ""))
            return index
        if not folder.is_dir():
            index.problems.append(f"folder not found: {folder} (expected <domain>/"
                                  f"{self.IMAGES_SUBDIR}/<class>/<image>)")
            return index
        label_of = {name: i for i, name in enumerate(self.class_dirs)}.get
        scan_class_folders(index, folder, label_of, self.class_dirs)
        return index


@register_dataset
class PACS(ImageFolderDataset):
    """PACS (Li et al., ICCV 2017): 4 domains x 7 classes, 9,991 images."""

    NAME = "PACS"
    DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
    CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    DEFAULT_SOURCE = "photo"
    ROOTS = ("PACS", "PACS/kfold", "kfold", "pacs")
    EXPECTED_IMAGES = {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}
    DOWNLOAD = ("https://domaingeneralization.github.io/ (PACS 'kfold' images; also fetched "
                "by DomainBed's download script as <data_dir>/PACS)")


@register_dataset
class OfficeHome(ImageFolderDataset):
    """Office-Home (Venkateswara et al., CVPR 2017): 4 domains x 65 classes, 15,588 images.
    The domain ``Real_World`` lives in the folder "Real World" (with a space) as distributed;
    "Real_World" is accepted too."""

    NAME = "OfficeHome"
    DOMAINS = ("Art", "Clipart", "Product", "Real_World")
    CLASSES = (
        "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator",
        "Calendar", "Candles", "Chair", "Clipboards", "Computer", "Couch", "Curtains",
        "Desk_Lamp", "Drill", "Eraser", "Exit_Sign", "Fan", "File_Cabinet", "Flipflops",
        "Flowers", "Folder", "Fork", "Glasses", "Hammer", "Helmet", "Kettle", "Keyboard",
        "Knives", "Lamp_Shade", "Laptop", "Marker", "Monitor", "Mop", "Mouse", "Mug",
        "Notebook", "Oven", "Pan", "Paper_Clip", "Pen", "Pencil", "Postit_Notes", "Printer",
        "Push_Pin", "Radio", "Refrigerator", "Ruler", "Scissors", "Screwdriver", "Shelf",
        "Sink", "Sneakers", "Soda", "Speaker", "Spoon", "TV", "Table", "Telephone",
        "ToothBrush", "Toys", "Trash_Can", "Webcam")
    DEFAULT_SOURCE = "Real_World"
    DOMAIN_DIRS = {"Real_World": ("Real World", "Real_World")}
    ROOTS = ("OfficeHome", "OfficeHomeDataset_10072016", "office_home", "Office-Home")
    LAYOUT = "{root}/<Domain>/<class>/<image> (domain folders Art, Clipart, Product, 'Real World')"
    EXPECTED_IMAGES = {"Art": 2427, "Clipart": 4365, "Product": 4439, "Real_World": 4357}
    DOWNLOAD = "https://www.hemanthdv.org/officeHomeDataset.html (OfficeHomeDataset_10072016.zip)"


@register_dataset
class Office31(ImageFolderDataset):
    """Office-31 (Saenko et al., ECCV 2010): 3 domains x 31 classes, 4,110 images."""

    NAME = "Office31"
    DOMAINS = ("amazon", "dslr", "webcam")
    CLASSES = (
        "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair",
        "desk_lamp", "desktop_computer", "file_cabinet", "headphones", "keyboard",
        "laptop_computer", "letter_tray", "mobile_phone", "monitor", "mouse", "mug",
        "paper_notebook", "pen", "phone", "printer", "projector", "punchers", "ring_binder",
        "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can")
    DEFAULT_SOURCE = "amazon"
    IMAGES_SUBDIR = "images"
    ROOTS = ("office31", "Office31", "office-31", "OFFICE31")
    LAYOUT = "{root}/<domain>/images/<class>/<image>"
    EXPECTED_IMAGES = {"amazon": 2817, "dslr": 498, "webcam": 795}
    DOWNLOAD = ("https://faculty.cc.gatech.edu/~judy/domainadapt/ "
                "(domain_adaptation_images.tar.gz)")


class ConfigFolderDataset(ImageFolderDataset):
    """Base of the datasets registered from a config file (``SEEN_CLASS_IDS`` from its
    ``seen_classes``; ``DEFINITION``: a hash of what its config defines)."""
