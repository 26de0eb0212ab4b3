"""``python -m sdgdml.datasets download``, offline: a local HTTP server on 127.0.0.1 serves
small archives built here in each dataset's distributed layout (tests/datatrees.py). Checked:
the unpacked files pass ``check``; a transfer cut halfway resumes with a Range request and ends
with the same bytes; a wrong checksum deletes the file and fails clearly; the painted Ext.
domains are reported as not public; an unsafe archive is refused."""
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

import datatrees as T
from sdgdml.datasets import PACS, create_dataset, download
from sdgdml.datasets.__main__ import main as datasets_main
from sdgdml.datasets.cub import CLASSES as CUB_CLASSES


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGDML_CACHE_DIR", str(tmp_path / "cache"))


class Server:
    """Serves ``files`` {name: bytes} with HTTP Range support. A name in ``cut`` is cut after
    half of its body on its first full request (the connection closes early)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.types: dict[str, str] = {}                   # name -> Content-Type
        self.requests: list[tuple[str, str | None]] = []     # (name, Range header)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                if name in server.types:
                    self.send_header("Content-Type", server.types[name])
                self.end_headers()
                body = data[start:]
                if name in server.cut and not rng:
                    server.cut.discard(name)
                    body = body[:len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        # a short poll interval: shutdown() waits up to one interval (0.5 s by default)
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


def _tgz(folder: Path, members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for m in members:
            t.add(folder / m, arcname=m)
    return buf.getvalue()


def _pacs_zip(tmp_path) -> bytes:
    """PACS as DomainBed's PACS.zip holds it: kfold/<domain>/<class>/<image>."""
    build = tmp_path / "build"
    T.folder_tree(build / "kfold", {d: d for d in PACS.DOMAINS}, PACS.CLASSES, 2)
    return _zip(build)


def _cli(*args):
    return datasets_main(["download", *map(str, args), "--quiet"])


def test_pacs_download_unpacks_into_the_checked_layout(tmp_path, server, capsys):
    server.files["PACS.zip"] = _pacs_zip(tmp_path)
    data = tmp_path / "data"
    assert _cli("PACS", "--data_dir", data, "--base_url", server.url) == 0
    out = capsys.readouterr().out
    assert "PACS: ready" in out
    ds = create_dataset("PACS", data)
    assert ds.root == data / "PACS"        # the archive's kfold/, renamed as DomainBed does
    assert all(len(ds.index(d).paths) == 2 * len(PACS.CLASSES) for d in PACS.DOMAINS)
    assert not (data / download.STAGING / "PACS.zip").exists()      # archive removed
    # a second run finds the marker and transfers nothing
    n = len(server.requests)
    assert _cli("PACS", "--data_dir", data, "--base_url", server.url) == 0
    assert len(server.requests) == n and "already in" in capsys.readouterr().out


def test_interrupted_download_resumes_with_a_range_request(tmp_path, server, monkeypatch,
                                                           capsys):
    archive = _pacs_zip(tmp_path)
    server.files["PACS.zip"] = archive
    server.cut.add("PACS.zip")
    # the published MD5/size of this test archive: the resumed file must match them exactly
    monkeypatch.setitem(download.SOURCES, "PACS", (download.Remote(
        "http://unused.invalid/PACS.zip", "PACS.zip", ".", rename=("kfold", "PACS"),
        md5=hashlib.md5(archive).hexdigest(), size=len(archive)),))
    data = tmp_path / "data"
    assert _cli("PACS", "--data_dir", data, "--base_url", server.url) == 2
    err = capsys.readouterr().err
    assert "interrupted after" in err and "run the same command again to resume" in err
    part = data / download.STAGING / "PACS.zip.part"
    assert part.stat().st_size == len(archive) // 2
    assert not (data / "PACS").exists()

    assert _cli("PACS", "--data_dir", data, "--base_url", server.url,
                "--keep_archives") == 0
    assert server.requests[-1] == ("PACS.zip", f"bytes={len(archive) // 2}-")
    assert (data / download.STAGING / "PACS.zip").read_bytes() == archive
    assert not part.exists()
    assert "PACS: ready" in capsys.readouterr().out


def test_checksum_mismatch_deletes_the_file_and_fails(tmp_path, server, capsys):
    """CUB's published MD5 against a (small, real-layout) archive that is not the release."""
    build = tmp_path / "build"
    T.cub(build / "CUB_200_2011", CUB_CLASSES, per_class=1)
    server.files["CUB_200_2011.tgz"] = _tgz(build, ["CUB_200_2011"])
    data = tmp_path / "data"
    assert _cli("CUB200Ext", "--data_dir", data, "--base_url", server.url) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CUB_200_2011.tgz")
    assert "MD5" in err and "97eceeb196236b17998738112f37df78" in err
    assert not any((data / download.STAGING).iterdir())       # nothing half-kept
    assert not (data / "CUB_200_2011").exists()


def test_cub_with_its_checksum_unpacks_and_names_the_painted_domains(tmp_path, server,
                                                                     monkeypatch, capsys):
    build = tmp_path / "build"
    T.cub(build / "CUB_200_2011", CUB_CLASSES, per_class=1)
    archive = _tgz(build, ["CUB_200_2011"])
    server.files["CUB_200_2011.tgz"] = archive
    monkeypatch.setitem(download.SOURCES, "CUB200Ext", (download.Remote(
        "http://unused.invalid/CUB_200_2011.tgz", "CUB_200_2011.tgz", ".",
        md5=hashlib.md5(archive).hexdigest(), domains=("real",)),))
    data = tmp_path / "data"
    # the real domain is complete; the painted ones cannot be downloaded: not ready
    assert _cli("CUB200Ext", "--data_dir", data, "--base_url", server.url) == 1
    out = capsys.readouterr().out
    assert "oil_painting, watercolor have no public download" in out
    ok, _ = create_dataset("CUB200Ext", data).check(["real"], verify=True)
    assert ok


def test_cars_archive_and_plain_file(tmp_path, server, capsys):
    build = tmp_path / "build"
    T.cars_annos(build, per_class=1)
    server.files["car_ims.tgz"] = _tgz(build, ["car_ims"])
    server.files["cars_annos.mat"] = (build / "cars_annos.mat").read_bytes()
    data = tmp_path / "data"
    assert _cli("Cars196Ext", "--data_dir", data, "--base_url", server.url,
                "--domains", "real") == 0
    assert "Cars196Ext: ready" in capsys.readouterr().out
    assert (data / "cars196" / "cars_annos.mat").read_bytes() == server.files["cars_annos.mat"]


def test_unknown_and_embedded_datasets(tmp_path, capsys):
    assert _cli("DigitsDG", "--data_dir", tmp_path) == 0
    assert "embedded" in capsys.readouterr().out
    assert _cli("Nope", "--data_dir", tmp_path) == 2
    assert "unknown dataset 'Nope'" in capsys.readouterr().err
    assert _cli("PACS", "--data_dir", tmp_path, "--domains", "moon") == 2
    assert "unknown domain 'moon'" in capsys.readouterr().err
    assert not (tmp_path / download.STAGING).exists()          # validated before anything


def test_missing_file_on_the_server_is_a_clear_error(tmp_path, server, capsys):
    assert _cli("PACS", "--data_dir", tmp_path / "d", "--base_url", server.url) == 2
    assert "HTTP 404" in capsys.readouterr().err


def test_a_web_page_or_a_broken_archive_is_a_clear_error(tmp_path, server, capsys):
    server.files["PACS.zip"] = b"<html>quota exceeded</html>"
    server.types["PACS.zip"] = "text/html; charset=utf-8"
    assert _cli("PACS", "--data_dir", tmp_path / "d", "--base_url", server.url) == 2
    assert "answered with a web page, not the file" in capsys.readouterr().err
    del server.types["PACS.zip"]
    assert _cli("PACS", "--data_dir", tmp_path / "d", "--base_url", server.url) == 2
    assert "is not a readable archive" in capsys.readouterr().err
    assert not any((tmp_path / "d" / download.STAGING).iterdir())     # deleted: fetch anew


def test_a_zip_member_outside_the_target_is_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(download.DownloadError, match="outside"):
        download.unpack(bad, tmp_path / "into")
    assert not (tmp_path / "escape.txt").exists()


def test_the_table_lists_every_file_dataset():
    from sdgdml.datasets import DATASETS, FileDataset

    builtin = {n for n, c in DATASETS.items() if issubclass(c, FileDataset)
               and not getattr(c, "DEFINITION", None)}
    assert builtin <= set(download.SOURCES)
    listed = {row[0] for row in download.table_rows()}
    assert listed == set(download.SOURCES)
