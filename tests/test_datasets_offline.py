"""`datasets download` on a machine that cannot reach the address: one error line saying where
to put the file by hand and how to use a mirror; `--list` shows sizes and checksums where
published (and says where none is); embedded datasets need no --data_dir in `check`."""
from __future__ import annotations

from sdgdml.datasets import __main__ as cli
from sdgdml.datasets import download


def test_offline_download_says_where_to_put_the_file(tmp_path, monkeypatch, capsys):
    def unreachable(url, dest, size=None, **kwargs):
        raise download.DownloadError(f"{url}: [Errno -2] Name or service not known")
    monkeypatch.setattr(download, "fetch", unreachable)
    assert cli.main(["download", "CUB200Ext", "--data_dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ")
    staged = tmp_path.resolve() / download.STAGING / "CUB_200_2011.tgz"
    assert f"copy it to {staged} (MD5 97eceeb196236b17998738112f37df78)" in err
    assert "--base_url http://<mirror>/<folder>/" in err
    assert not any(tmp_path.glob("CUB_200_2011"))         # nothing unpacked


def test_list_shows_sizes_and_checksums_or_says_none_is_published(capsys):
    assert cli.main(["download", "--list"]) == 0
    out = capsys.readouterr().out
    cub = [line for line in out.splitlines() if "CUB_200_2011.tgz" in line][0]
    assert "97eceeb196236b17998738112f37df78" in cub
    rows = download.table_rows()
    assert all(len(r) == len(download.TABLE_HEADERS) for r in rows)
    for r in rows:
        remote = {x.filename: x for files in download.SOURCES.values() for x in files}.get(r[1])
        if remote is not None:
            assert (r[4] == remote.md5) if remote.md5 else r[4] == download.NOT_KNOWN
            assert r[3].startswith(f"{remote.size:,} B") if remote.size else \
                r[3] == download.NOT_KNOWN
    assert f"'{download.NOT_KNOWN}': the distributor publishes none" in out


def test_check_of_an_embedded_dataset_needs_no_data_dir(capsys):
    assert cli.main(["check", "--dataset", "DigitsDG"]) == 0
    assert "DigitsDG: embedded, nothing to check" in capsys.readouterr().out
    assert cli.main(["check", "--dataset", "DigitsDG", "PACS"]) == 2
    assert "error: check PACS needs --data_dir" in capsys.readouterr().err
