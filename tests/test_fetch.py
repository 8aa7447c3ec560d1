"""Downloads against a loopback HTTP server: checksums, interrupted transfers,
atomic unpacking."""

import hashlib
import http.server
import io
import socket
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from rshash import RshashError
from rshash.data.fetch import download, ensure_images
from rshash.digest import file_sha256


def _archive() -> bytes:
    """A zip of Small/Images/<class>/<image>.png, 2 classes x 2 images."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("beach", "forest"):
            for i in range(2):
                png = io.BytesIO()
                Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(png, "PNG")
                zf.writestr(f"Small/Images/{cls}/{cls}{i}.png", png.getvalue())
    return buf.getvalue()


ARCHIVE = _archive()
SHA = hashlib.sha256(ARCHIVE).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ARCHIVE; while ``server.cut`` is set, closes the connection midway."""

    def do_GET(self):
        self.server.requests += 1
        self.send_response(200)
        archive = self.server.archive
        self.send_header("Content-Length", str(len(archive)))
        self.end_headers()
        body = archive[: len(archive) // 2] if self.server.cut else archive
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.cut, srv.requests, srv.archive = False, 0, ARCHIVE
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/Small.zip"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_verifies_the_checksum(server, tmp_path):
    dest = download(server.url, tmp_path / "Small.zip", SHA)
    assert dest.read_bytes() == ARCHIVE
    download(server.url, dest, SHA)  # present and matching: not fetched again
    assert server.requests == 1


def test_checksum_mismatch_deletes_the_download_and_names_both_digests(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(RshashError, match=f"expected sha256 {wrong}, got {SHA}"):
        download(server.url, tmp_path / "Small.zip", wrong)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_is_not_trusted_and_restarts(server, tmp_path):
    server.cut = True
    dest = tmp_path / "Small.zip"
    with pytest.raises(RshashError, match="could not download .*Small.zip.*run again"):
        download(server.url, dest, SHA)
    assert list(tmp_path.iterdir()) == []  # no .part, no archive
    with pytest.raises(RshashError):  # also without a checksum to catch it
        download(server.url, dest)
    assert list(tmp_path.iterdir()) == []
    server.cut = False
    download(server.url, dest, SHA)
    assert file_sha256(dest) == SHA


def test_a_stale_archive_with_a_wrong_digest_is_downloaded_again(server, tmp_path):
    dest = tmp_path / "Small.zip"
    dest.write_bytes(ARCHIVE[:100])
    download(server.url, dest, SHA)
    assert dest.read_bytes() == ARCHIVE and server.requests == 1


def test_offline_gives_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RshashError, match=f"could not download http://127.0.0.1:{port}/x.zip"):
        download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_ensure_images_downloads_and_unpacks_atomically(server, tmp_path):
    folder = tmp_path / "Small" / "Images"
    got = ensure_images("small", folder, server.url, "Small", tmp_path)
    assert got == folder
    assert sorted(p.name for p in folder.iterdir()) == ["beach", "forest"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Small", "Small.zip"]


def test_interrupted_unpacking_leaves_no_folder(server, tmp_path, monkeypatch):
    folder = tmp_path / "Small" / "Images"
    real = zipfile.ZipFile.extractall

    def extract_then_die(self, path=None, *args, **kwargs):
        real(self, path, *args, **kwargs)
        raise KeyboardInterrupt  # e.g. the job killed after writing some files

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_then_die)
    with pytest.raises(KeyboardInterrupt):
        ensure_images("small", folder, server.url, "Small", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Small.zip"]  # no Small/, no temp
    monkeypatch.setattr(zipfile.ZipFile, "extractall", real)
    assert ensure_images("small", folder, server.url, "Small", tmp_path) == folder
    assert server.requests == 1  # the complete archive was reused


def test_corrupt_archive_is_removed(server, tmp_path):
    (tmp_path / "Small.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RshashError, match="not a valid zip archive.*removed"):
        ensure_images("small", tmp_path / "Small" / "Images", server.url, "Small", tmp_path)
    assert list(tmp_path.iterdir()) == []


def _tiff(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, "TIFF")
    return buf.getvalue()


TIFFS = {
    f"{cls}/{cls}{i:02d}.tif": _tiff(30 * i + (cls == "river"))
    for cls in ("beach", "river")
    for i in range(3)
}
TIFF_SUMS = {name: hashlib.sha256(data).hexdigest() for name, data in TIFFS.items()}


def _tiff_archive(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"Small/Images/{name}", data)
    return buf.getvalue()


def test_every_unpacked_image_is_checked_against_the_published_digests(server, tmp_path):
    folder = tmp_path / "Small" / "Images"
    tampered = dict(TIFFS)
    tampered["beach/beach01.tif"] = tampered["beach/beach01.tif"][:-1] + b"\x01"
    del tampered["river/river02.tif"]
    tampered["river/river99.tif"] = _tiff(99)
    tampered["river/Thumbs.db"] = b"\0"  # a system file is no extra image
    server.archive = _tiff_archive(tampered)
    with pytest.raises(RshashError) as err:
        ensure_images("small", folder, server.url, "Small", tmp_path, checksums=TIFF_SUMS)
    message = str(err.value)
    assert "1 file(s) differ from their published sha256: beach/beach01.tif" in message
    assert "1 file(s) missing: river/river02.tif" in message
    assert "1 file(s) not in the dataset: river/river99.tif" in message
    assert server.url in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Small.zip"]  # nothing unpacked kept

    (tmp_path / "Small.zip").unlink()
    server.archive = _tiff_archive(TIFFS)
    assert (
        ensure_images("small", folder, server.url, "Small", tmp_path, checksums=TIFF_SUMS) == folder
    )
    assert sorted(p.name for p in (folder / "river").iterdir()) == [
        "river00.tif",
        "river01.tif",
        "river02.tif",
    ]


def test_offline_download_names_the_url_and_the_folder(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/Small.zip"
    data = tmp_path / "data"  # absent: created, as the default data directory is
    folder = data / "Small" / "Images"
    with pytest.raises(RshashError) as err:
        ensure_images("small", folder, url, "Small", data, create_data_dir=True)
    message = str(err.value)
    assert f"could not download {url}" in message
    assert f"unpack it so that {folder}/<class>/ holds the images" in message
    assert data.is_dir() and list(data.iterdir()) == []


def test_the_ucmd_digests_ship_with_the_package(repo):
    import fnmatch
    import tomllib

    from rshash.data.datasets import KNOWN, UCMD_CLASSES, load_checksums

    spec = KNOWN["ucmd"]
    sums = load_checksums(spec)
    assert len(sums) == 2100 and spec.url.startswith("https://")
    assert {name.split("/")[0] for name in sums} == set(UCMD_CLASSES)
    assert all(name.endswith(".tif") and len(d) == 64 for name, d in sums.items())
    package_data = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["rshash.data"]
    assert any(fnmatch.fnmatch(f"checksums/{spec.checksums}", g) for g in package_data)
