"""CUB-200-2011 Ext.: CUB-200-2011 (Wah et al., 2011; 200 bird species, 11,788 photos) as the
``real`` domain plus the painted domains ``oil_painting`` and ``watercolor`` (layout: see
:mod:`sdgdml.datasets.ext`).

The real domain is read from the official files of ``CUB_200_2011.tgz``: ``images.txt``
(``<image id> <class folder>/<file>``), ``image_class_labels.txt`` (``<image id> <class id>``),
``train_test_split.txt`` (``<image id> <is_training_image>``) and ``classes.txt``
(``<class id> <class folder>``), with the images under ``images/``. Class order: the official
class ids 1-200 (``CLASSES``, checked against classes.txt); seen = 1-100 (5,864 photos),
unseen = 101-200 (5,924 photos), the DML convention. The official train/test split is the
classification split: it is read (``val_protocol official`` uses it) but, as in DML, every
image of a class is used.
"""
from __future__ import annotations

from pathlib import Path

from .ext import ExtDataset
from .files import DomainIndex, list_images, some
from .registry import register_dataset

CLASSES = (
    "001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
    "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet", "007.Parakeet_Auklet",
    "008.Rhinoceros_Auklet", "009.Brewer_Blackbird", "010.Red_winged_Blackbird",
    "011.Rusty_Blackbird", "012.Yellow_headed_Blackbird", "013.Bobolink", "014.Indigo_Bunting",
    "015.Lazuli_Bunting", "016.Painted_Bunting", "017.Cardinal", "018.Spotted_Catbird",
    "019.Gray_Catbird", "020.Yellow_breasted_Chat", "021.Eastern_Towhee",
    "022.Chuck_will_Widow", "023.Brandt_Cormorant", "024.Red_faced_Cormorant",
    "025.Pelagic_Cormorant", "026.Bronzed_Cowbird", "027.Shiny_Cowbird", "028.Brown_Creeper",
    "029.American_Crow", "030.Fish_Crow", "031.Black_billed_Cuckoo", "032.Mangrove_Cuckoo",
    "033.Yellow_billed_Cuckoo", "034.Gray_crowned_Rosy_Finch", "035.Purple_Finch",
    "036.Northern_Flicker", "037.Acadian_Flycatcher", "038.Great_Crested_Flycatcher",
    "039.Least_Flycatcher", "040.Olive_sided_Flycatcher", "041.Scissor_tailed_Flycatcher",
    "042.Vermilion_Flycatcher", "043.Yellow_bellied_Flycatcher", "044.Frigatebird",
    "045.Northern_Fulmar", "046.Gadwall", "047.American_Goldfinch", "048.European_Goldfinch",
    "049.Boat_tailed_Grackle", "050.Eared_Grebe", "051.Horned_Grebe", "052.Pied_billed_Grebe",
    "053.Western_Grebe", "054.Blue_Grosbeak", "055.Evening_Grosbeak", "056.Pine_Grosbeak",
    "057.Rose_breasted_Grosbeak", "058.Pigeon_Guillemot", "059.California_Gull",
    "060.Glaucous_winged_Gull", "061.Heermann_Gull", "062.Herring_Gull", "063.Ivory_Gull",
    "064.Ring_billed_Gull", "065.Slaty_backed_Gull", "066.Western_Gull", "067.Anna_Hummingbird",
    "068.Ruby_throated_Hummingbird", "069.Rufous_Hummingbird", "070.Green_Violetear",
    "071.Long_tailed_Jaeger", "072.Pomarine_Jaeger", "073.Blue_Jay", "074.Florida_Jay",
    "075.Green_Jay", "076.Dark_eyed_Junco", "077.Tropical_Kingbird", "078.Gray_Kingbird",
    "079.Belted_Kingfisher", "080.Green_Kingfisher", "081.Pied_Kingfisher",
    "082.Ringed_Kingfisher", "083.White_breasted_Kingfisher", "084.Red_legged_Kittiwake",
    "085.Horned_Lark", "086.Pacific_Loon", "087.Mallard", "088.Western_Meadowlark",
    "089.Hooded_Merganser", "090.Red_breasted_Merganser", "091.Mockingbird", "092.Nighthawk",
    "093.Clark_Nutcracker", "094.White_breasted_Nuthatch", "095.Baltimore_Oriole",
    "096.Hooded_Oriole", "097.Orchard_Oriole", "098.Scott_Oriole", "099.Ovenbird",
    "100.Brown_Pelican", "101.White_Pelican", "102.Western_Wood_Pewee", "103.Sayornis",
    "104.American_Pipit", "105.Whip_poor_Will", "106.Horned_Puffin", "107.Common_Raven",
    "108.White_necked_Raven", "109.American_Redstart", "110.Geococcyx", "111.Loggerhead_Shrike",
    "112.Great_Grey_Shrike", "113.Baird_Sparrow", "114.Black_throated_Sparrow",
    "115.Brewer_Sparrow", "116.Chipping_Sparrow", "117.Clay_colored_Sparrow",
    "118.House_Sparrow", "119.Field_Sparrow", "120.Fox_Sparrow", "121.Grasshopper_Sparrow",
    "122.Harris_Sparrow", "123.Henslow_Sparrow", "124.Le_Conte_Sparrow", "125.Lincoln_Sparrow",
    "126.Nelson_Sharp_tailed_Sparrow", "127.Savannah_Sparrow", "128.Seaside_Sparrow",
    "129.Song_Sparrow", "130.Tree_Sparrow", "131.Vesper_Sparrow", "132.White_crowned_Sparrow",
    "133.White_throated_Sparrow", "134.Cape_Glossy_Starling", "135.Bank_Swallow",
    "136.Barn_Swallow", "137.Cliff_Swallow", "138.Tree_Swallow", "139.Scarlet_Tanager",
    "140.Summer_Tanager", "141.Artic_Tern", "142.Black_Tern", "143.Caspian_Tern",
    "144.Common_Tern", "145.Elegant_Tern", "146.Forsters_Tern", "147.Least_Tern",
    "148.Green_tailed_Towhee", "149.Brown_Thrasher", "150.Sage_Thrasher",
    "151.Black_capped_Vireo", "152.Blue_headed_Vireo", "153.Philadelphia_Vireo",
    "154.Red_eyed_Vireo", "155.Warbling_Vireo", "156.White_eyed_Vireo",
    "157.Yellow_throated_Vireo", "158.Bay_breasted_Warbler", "159.Black_and_white_Warbler",
    "160.Black_throated_Blue_Warbler", "161.Blue_winged_Warbler", "162.Canada_Warbler",
    "163.Cape_May_Warbler", "164.Cerulean_Warbler", "165.Chestnut_sided_Warbler",
    "166.Golden_winged_Warbler", "167.Hooded_Warbler", "168.Kentucky_Warbler",
    "169.Magnolia_Warbler", "170.Mourning_Warbler", "171.Myrtle_Warbler",
    "172.Nashville_Warbler", "173.Orange_crowned_Warbler", "174.Palm_Warbler",
    "175.Pine_Warbler", "176.Prairie_Warbler", "177.Prothonotary_Warbler",
    "178.Swainson_Warbler", "179.Tennessee_Warbler", "180.Wilson_Warbler",
    "181.Worm_eating_Warbler", "182.Yellow_Warbler", "183.Northern_Waterthrush",
    "184.Louisiana_Waterthrush", "185.Bohemian_Waxwing", "186.Cedar_Waxwing",
    "187.American_Three_toed_Woodpecker", "188.Pileated_Woodpecker",
    "189.Red_bellied_Woodpecker", "190.Red_cockaded_Woodpecker", "191.Red_headed_Woodpecker",
    "192.Downy_Woodpecker", "193.Bewick_Wren", "194.Cactus_Wren", "195.Carolina_Wren",
    "196.House_Wren", "197.Marsh_Wren", "198.Rock_Wren", "199.Winter_Wren",
    "200.Common_Yellowthroat")
OFFICIAL_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def read_id_file(path: Path, index: DomainIndex) -> dict[int, str]:
    """{id: rest of the line} of a CUB '<id> <value>' file; bad lines become problems."""
    if not path.is_file():
        index.problems.append(f"official file not found: {path}")
        return {}
    out, bad = {}, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        key, _, value = line.strip().partition(" ")
        if not line.strip():
            continue
        if not key.isdigit() or not value:
            bad.append(f"line {n}: {line.strip()!r}")
        else:
            out[int(key)] = value.strip()
    if bad:
        index.problems.append(f"{len(bad)} bad lines in {path} (expected '<id> <value>'): "
                              f"{some(bad, 5)}")
    return out


@register_dataset
class CUB200Ext(ExtDataset):
    NAME = "CUB200Ext"
    CLASSES = CLASSES
    CLASS_FOLDERS = CLASSES
    ROOTS = ("CUB_200_2011", "CUB_200_2011/CUB_200_2011", "CUB200", "cub200")
    EXT_ROOT = "CUB200Ext"
    LAYOUT = ("real: {root}/images/<NNN.Class_name>/<file>.jpg with {root}/images.txt, "
              "image_class_labels.txt, train_test_split.txt, classes.txt (CUB_200_2011.tgz "
              "unpacked)\npainted domains (our default, see README): "
              "<data_dir>/CUB200Ext/<oil_painting|watercolor>/<NNN[.Class_name]>/<image>")
    EXPECTED_IMAGES = {"real": 11788}
    DOWNLOAD = ("https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz); "
                "painted domains: not public as far as we know (see README)")

    def real_fingerprint_paths(self) -> list[Path]:
        images = self.root / "images"
        return [*(self.root / f for f in OFFICIAL_FILES), images,
                *(images / c for c in self.CLASSES)]

    def build_real_index(self) -> DomainIndex:
        index = DomainIndex("real", str(self.root))
        files = [read_id_file(self.root / f, index) for f in OFFICIAL_FILES]
        if index.problems:
            return index
        images, labels, is_train, classes = files
        wrong = [f"{i} {classes.get(i + 1)!r} (expected {c!r})" for i, c in enumerate(self.CLASSES)
                 if classes.get(i + 1) != c]
        if wrong or len(classes) != len(self.CLASSES):
            index.problems.append(f"classes.txt does not list the 200 official classes in "
                                  f"order: {some(wrong, 5)}")
            return index
        folder = self.root / "images"
        on_disk = {c: set(list_images(folder / c)) if (folder / c).is_dir() else set()
                   for c in self.CLASSES}
        missing, bad, flags = [], [], []
        for image_id, rel in sorted(images.items()):
            class_id = labels.get(image_id, "")
            class_dir, _, name = rel.partition("/")
            if not class_id.isdigit() or not 1 <= int(class_id) <= len(self.CLASSES):
                bad.append(f"image {image_id}: class {class_id or 'missing'}")
            elif self.CLASSES[int(class_id) - 1] != class_dir:
                bad.append(f"image {image_id} ({rel}): labelled class {class_id}")
            elif is_train.get(image_id) not in ("0", "1"):
                bad.append(f"image {image_id}: no train/test flag")
            elif name not in on_disk[class_dir]:
                missing.append(rel)
            else:
                index.paths.append(str(folder / rel))
                index.labels.append(int(class_id) - 1)
                flags.append(is_train[image_id] == "0")
        index.official_test = flags
        if bad:
            index.problems.append(f"{len(bad)} images with inconsistent annotations: "
                                  f"{some(bad, 5)}")
        if missing:
            index.problems.append(f"{len(missing)} of the {len(images)} images in images.txt "
                                  f"are missing under {folder}: {some(missing)}")
        return index
