"""Fetch the registered datasets from their official addresses, unpacked into the layout
``check`` expects:

    python -m sdgdml.datasets download PACS --data_dir /data
    python -m sdgdml.datasets download DomainNet --data_dir /data --domains real sketch
    python -m sdgdml.datasets download CUB200Ext --data_dir /data --base_url http://mirror/cub/

``SOURCES`` is the one table of addresses (the README's "download" table shows the same).
Each file goes to ``<data_dir>/.sdgdml_downloads/<file>.part`` first; an interrupted transfer
resumes from there with an HTTP ``Range`` request (a server that ignores it sends the whole
file again). A file's size and MD5 are verified where the distributor publishes them; a
mismatch deletes the file and stops with an error. Archives are unpacked with the standard
library's safe extraction (``tarfile`` "data" filter; zip members must stay inside the
target folder), then deleted unless ``--keep_archives``; a marker ``<file>.done`` makes a
second run skip what is already unpacked. ``--base_url`` fetches the same file names from a
mirror (a cluster's file server; the tests' local server). A machine that cannot reach an
address gets one error line saying where to put the file by hand (``by_hand``) and how to use
a mirror.

Google Drive hosts PACS, Office-Home and Office-31 for their authors; Drive may refuse
scripted downloads of large files (quota): then download the file in a browser, put it in
``<data_dir>/.sdgdml_downloads/`` under the name in the table, and run the command again: a
complete file is verified and unpacked without a transfer.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..progress import Progress
from .samples import DatasetError

STAGING = ".sdgdml_downloads"
CHUNK = 1 << 20


class DownloadError(DatasetError):
    """A transfer, a verification or an unpacking failed."""


@dataclass(frozen=True)
class Remote:
    """One distributed file: where it is, what it is called, where under ``data_dir`` it (or
    its archive's contents) goes, and the size/MD5 published by its distributor (None: none
    published). ``domains``: the domains it holds (empty: all of the dataset's). ``rename``:
    (folder in the archive, the name it gets in ``into``)."""

    url: str
    filename: str
    into: str
    md5: str | None = None
    size: int | None = None
    domains: tuple[str, ...] = ()
    rename: tuple[str, str] | None = None

    @property
    def is_archive(self) -> bool:
        return self.filename.endswith((".zip", ".tar", ".tgz", ".tar.gz"))


def _drive(file_id: str) -> str:
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


_VISDA = "http://csr.bu.edu/ftp/visda/2019/multi-source"
_DOMAINNET_ZIPS = {"clipart": f"{_VISDA}/groundtruth/clipart.zip",     # cleaned versions
                   "infograph": f"{_VISDA}/infograph.zip",
                   "painting": f"{_VISDA}/groundtruth/painting.zip",
                   "quickdraw": f"{_VISDA}/quickdraw.zip", "real": f"{_VISDA}/real.zip",
                   "sketch": f"{_VISDA}/sketch.zip"}
_CUB = (Remote("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
               "CUB_200_2011.tgz", ".", md5="97eceeb196236b17998738112f37df78",
               domains=("real",)),)
_CARS = (Remote("http://ai.stanford.edu/~jkrause/car196/car_ims.tgz", "car_ims.tgz", "cars196",
                domains=("real",)),
         Remote("http://ai.stanford.edu/~jkrause/car196/cars_annos.mat", "cars_annos.mat",
                "cars196", domains=("real",)))

# dataset -> its files. Archives unpack into ``into`` (relative to data_dir): the folder
# names inside each archive then give the layout of docs/datasets.md.
SOURCES: dict[str, tuple[Remote, ...]] = {
    "DomainNet": tuple(
        r for d, url in _DOMAINNET_ZIPS.items() for r in (
            Remote(url, f"{d}.zip", "domain_net", domains=(d,)),
            *(Remote(f"{_VISDA}/domainnet/txt/{d}_{part}.txt", f"{d}_{part}.txt", "domain_net",
                     domains=(d,)) for part in ("train", "test")))),
    "PACS": (Remote(_drive("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd"), "PACS.zip", ".",
                    rename=("kfold", "PACS")),),
    "OfficeHome": (Remote(_drive("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC"),
                          "OfficeHomeDataset_10072016.zip", "."),),
    "Office31": (Remote(_drive("0B4IapRTv9pJ1WGZVd1VDMmhwdlE"),
                        "domain_adaptation_images.tar.gz", "office31"),),
    "CUB200Ext": _CUB,
    "Cars196Ext": _CARS,
}
# datasets (or their domains) that nobody distributes publicly, as far as we know
NOT_PUBLIC = {
    "CUB200Ext": ("oil_painting", "watercolor"),
    "Cars196Ext": ("oil_painting", "watercolor"),
}
NOTES = {
    "Cars196Ext": "the Stanford Cars pages have been offline at times; if the address fails, "
                  "fetch car_ims.tgz and cars_annos.mat from a mirror with --base_url",
}


def remotes(name: str, domains: list[str] | None = None) -> list[Remote]:
    """The files of dataset ``name`` (those holding ``domains``, default all)."""
    if name not in SOURCES:
        raise DownloadError(f"no download is known for {name!r}; datasets with one: "
                            f"{', '.join(sorted(SOURCES))}")
    wanted = set(domains or [])
    return [r for r in SOURCES[name] if not wanted or not r.domains or wanted & set(r.domains)]


def not_public_message(name: str, domains: list[str] | None = None) -> str | None:
    """A line naming the requested domains of ``name`` that have no public download."""
    missing = [d for d in NOT_PUBLIC.get(name, ()) if not domains or d in domains]
    if not missing:
        return None
    return (f"{name}: the domains {', '.join(missing)} have no public download that we know "
            f"of; put them in the layout of docs/datasets.md ('The Ext. painted domains')")


# ----------------------------------------------------------------------------- transfer
def fetch(url: str, dest: Path, size: int | None = None, timeout: float = 60.0,
          quiet: bool = False) -> Path:
    """Download ``url`` to ``dest``, through ``dest.part``: a ``.part`` left by an
    interrupted run is resumed with an HTTP Range request. Returns ``dest``."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "sdgdml-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and size == have:      # the .part is already complete
            part.replace(dest)
            return dest
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from None
    with response:
        if response.headers.get_content_type() == "text/html" and \
                not dest.name.endswith((".html", ".htm")):
            raise DownloadError(
                f"{url} answered with a web page, not the file (a quota or sign-in page?); "
                f"download {dest.name} in a browser, put it in {dest.parent} and run the same "
                f"command again")
        resumed = have and response.status == 206
        if have and not resumed:
            have = 0                                   # no range support: start again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else size
        progress = Progress(total or 0, start=have, desc=dest.name, unit="byte",
                            disable=quiet or not total)
        if resumed and not quiet:
            print(f"{dest.name}: resuming at byte {have:,}", flush=True)
        with open(part, "ab" if resumed else "wb") as f, progress:
            got = have
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    progress.update(len(chunk))
            except (OSError, ValueError) as e:   # connection reset, IncompleteRead, timeout
                raise DownloadError(f"{url}: interrupted after {got:,} bytes ({e}); run the "
                                    f"same command again to resume") from None
    if total is not None and got < total:
        raise DownloadError(f"{url}: interrupted after {got:,} of {total:,} bytes; run the "
                            f"same command again to resume")
    part.replace(dest)
    return dest


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, remote: Remote) -> None:
    """Size and MD5 against the published ones; a mismatching file is deleted."""
    problem = None
    if remote.size is not None and path.stat().st_size != remote.size:
        problem = f"size {path.stat().st_size:,} bytes, expected {remote.size:,}"
    elif remote.md5 is not None and (digest := md5sum(path)) != remote.md5:
        problem = f"MD5 {digest}, expected {remote.md5}"
    if problem:
        path.unlink()
        raise DownloadError(f"{remote.filename} from {remote.url}: {problem}; the file was "
                            f"deleted (a corrupt transfer or another release); run again to "
                            f"fetch it anew")


# ----------------------------------------------------------------------------- unpacking
def unpack(archive: Path, into: Path) -> None:
    """Extract ``archive`` into ``into``; no member may land outside it."""
    into.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                root = into.resolve()
                for member in z.namelist():
                    target = (into / member).resolve()
                    if target != root and root not in target.parents:
                        raise DownloadError(f"{archive}: member {member!r} would be written "
                                            f"outside {into}; not unpacked")
                z.extractall(into)
        else:
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        archive.unlink()
        raise DownloadError(f"{archive} is not a readable archive ({e}); it was deleted: run "
                            f"again to fetch it anew") from None


def install(remote: Remote, data_dir: Path, base_url: str | None = None,
            keep_archives: bool = False, quiet: bool = False) -> str:
    """Fetch, verify and place (unpack) one file; returns what was done, in words."""
    staging = data_dir / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    marker = staging / (remote.filename + ".done")
    target = data_dir / remote.into
    if marker.exists():
        return f"{remote.filename}: already in {target}"
    url = base_url.rstrip("/") + "/" + remote.filename if base_url else remote.url
    file = staging / remote.filename
    if not file.exists():
        try:
            fetch(url, file, remote.size, quiet=quiet)
        except DownloadError as e:
            raise DownloadError(f"{e}. {by_hand(remote, file)}") from None
    verify(file, remote)
    if remote.is_archive:
        unpack(file, target)
        if remote.rename and not (target / remote.rename[1]).exists():
            (target / remote.rename[0]).rename(target / remote.rename[1])
        if not keep_archives:
            file.unlink()
        done = f"{remote.filename}: unpacked into {target}"
    else:
        target.mkdir(parents=True, exist_ok=True)
        (shutil.copy2 if keep_archives else shutil.move)(file, target / remote.filename)
        done = f"{remote.filename}: saved as {target / remote.filename}"
    marker.write_text(url + "\n")
    return done


def by_hand(remote: Remote, file: Path) -> str:
    """How to install ``remote`` without this machine reaching its address."""
    known = ", ".join(filter(None, [remote.size and f"{remote.size:,} bytes",
                                    remote.md5 and f"MD5 {remote.md5}"]))
    return (f"Offline? Fetch {remote.url} elsewhere and copy it to {file.resolve()}"
            f"{f' ({known})' if known else ''}, then run the same command again (it verifies "
            f"and unpacks it without a transfer); or fetch it from a mirror holding "
            f"{remote.filename}: --base_url http://<mirror>/<folder>/")


def download(name: str, data_dir: str | os.PathLike, domains: list[str] | None = None,
             base_url: str | None = None, keep_archives: bool = False,
             quiet: bool = False) -> list[str]:
    """Install every file of dataset ``name`` (for ``domains``) under ``data_dir``; returns a
    line per file, plus one for the domains without a public download."""
    todo = remotes(name, domains)
    lines = []
    for remote in todo:
        if not quiet:
            print(f"{remote.filename} <- {base_url or remote.url}", flush=True)
        try:
            lines.append(install(remote, Path(data_dir), base_url, keep_archives, quiet))
        except DownloadError as e:
            raise DownloadError(f"{e} ({NOTES[name]})" if name in NOTES else str(e)) from None
    if msg := not_public_message(name, domains):
        lines.append(msg)
    return lines


TABLE_HEADERS = ("dataset", "file", "address", "size", "MD5")
NOT_KNOWN = "none published"


def table_rows() -> list[list[str]]:
    """(dataset, file, address, size, MD5) rows of ``SOURCES``, for the CLI and README;
    ``NOT_KNOWN`` where the distributor publishes no size or checksum."""
    rows = []
    for name, files in SOURCES.items():
        for r in files:
            size = f"{r.size:,} B ({r.size / 1e9:.2f} GB)" if r.size else NOT_KNOWN
            rows.append([name, r.filename, r.url, size, r.md5 or NOT_KNOWN])
        for d in NOT_PUBLIC.get(name, ()):
            rows.append([name, d, "no public download", "-", "-"])
    return rows

