"""pipelines.data.download against an HTTP server on 127.0.0.1 that this test starts (with Range support)."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.download import download, extract_archive, prepare_imagewoof, verify_archive
from pipelines.data.images import IMAGEWOOF_CLASSES, load_images


def _imagewoof_tgz(path: Path, stem: str = "imagewoof2-160", per_class: int = 2) -> Path:
    """A tiny ImageWoof-shaped .tgz: <stem>/{train,val}/<wnid>/*.JPEG for two breeds."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "val"):
            for wnid in list(IMAGEWOOF_CLASSES)[:2]:
                for i in range(per_class):
                    buf = io.BytesIO()
                    # Noise does not compress: the archive is big enough to be cut mid-way.
                    arr = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
                    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
                    info = tarfile.TarInfo(f"{stem}/{split}/{wnid}/ILSVRC_{i}.JPEG")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return path


class _Server:
    """A local HTTP server for one payload; it can cut the first response off half-way."""

    def __init__(self, payload: bytes, drop_first: bool = False):
        self.payload = payload
        self.drop_first = drop_first
        self.ranges: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                if not self.path.endswith(".tgz"):
                    self.send_error(404, "no such file")
                    return
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                data, start = outer.payload, 0
                total = len(data)
                if rng:
                    m = re.fullmatch(r"bytes=(\d+)-", rng)
                    start = int(m.group(1))
                    if start >= total:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{total}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.drop_first:
                    outer.drop_first = False
                    # Announce the whole body, send half of it, hang up.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str = "imagewoof2-160.tgz") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """An ImageWoof-shaped archive with 3 images per split and breed (12 files)."""
    (tmp_path / "src").mkdir()
    return _imagewoof_tgz(tmp_path / "src" / "imagewoof2-160.tgz", per_class=3)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_full_download_matches_payload_and_hash(tmp_path: Path, archive: Path):
    payload = archive.read_bytes()
    with _Server(payload) as srv:
        out = download(srv.url(), tmp_path / "dl" / "a.tgz", sha256=hashlib.sha256(payload).hexdigest())
    assert out.read_bytes() == payload
    assert srv.ranges == [None]
    assert not (tmp_path / "dl" / "a.tgz.part").exists()


def test_broken_download_resumes_with_range(tmp_path: Path, archive: Path):
    payload = archive.read_bytes()
    dest = tmp_path / "dl" / "a.tgz"
    with _Server(payload, drop_first=True) as srv:
        # No retries: the call stops, keeping the half it got in a .part file.
        with pytest.raises(ConnectionError, match="run the same command again to resume"):
            download(srv.url(), dest, retries=0)
        part = dest.with_name("a.tgz.part")
        assert part.stat().st_size == len(payload) // 2
        # Running it again asks only for the rest.
        download(srv.url(), dest, retries=0)
    assert srv.ranges == [None, f"bytes={len(payload) // 2}-"]
    assert dest.read_bytes() == payload and not part.exists()


def test_break_is_resumed_within_one_call(tmp_path: Path, archive: Path):
    payload = archive.read_bytes()
    with _Server(payload, drop_first=True) as srv:
        out = download(srv.url(), tmp_path / "b.tgz")
    assert out.read_bytes() == payload and srv.ranges[1] == f"bytes={len(payload) // 2}-"


def test_complete_part_file_is_accepted_after_416(tmp_path: Path, archive: Path):
    payload = archive.read_bytes()
    (tmp_path / "c.tgz.part").write_bytes(payload)
    with _Server(payload) as srv:
        out = download(srv.url(), tmp_path / "c.tgz")
    assert out.read_bytes() == payload


def test_wrong_hash_is_refused(tmp_path: Path, archive: Path):
    with _Server(archive.read_bytes()) as srv, pytest.raises(ValueError, match="SHA-256"):
        download(srv.url(), tmp_path / "d.tgz", sha256="0" * 64)


def test_offline_and_http_errors_are_one_sentence(tmp_path: Path, archive: Path):
    url = f"http://127.0.0.1:{_closed_port()}/imagewoof2-160.tgz"
    with pytest.raises(ConnectionError, match=r"Cannot reach .*download it elsewhere and pass --archive FILE"):
        download(url, tmp_path / "e.tgz")
    with _Server(archive.read_bytes()) as srv, pytest.raises(ConnectionError, match="HTTP 404"):
        download(srv.url("missing.zip"), tmp_path / "e.tgz")


def test_prepare_downloads_extracts_and_loads(tmp_path: Path, archive: Path):
    root = tmp_path / "data"
    with _Server(archive.read_bytes(), drop_first=True) as srv:
        folder = prepare_imagewoof(root, "160", url=srv.url())
        n_requests = len(srv.ranges)
        # A second call finds the complete copy and downloads nothing.
        assert prepare_imagewoof(root, "160", url=srv.url()) == folder
        assert len(srv.ranges) == n_requests
    assert folder == root / "imagewoof2-160"
    assert not (root / "imagewoof2-160.tgz").exists()  # downloaded archive removed after extraction
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folders left
    s = load_images(folder / "train", 16, cache=False)
    assert len(s) == 6 and s.skipped == []


def test_prepare_from_local_archive_keeps_it(tmp_path: Path, archive: Path):
    folder = prepare_imagewoof(tmp_path / "d", "160", archive=archive)
    assert (folder / "val" / next(iter(IMAGEWOOF_CLASSES))).is_dir() and archive.is_file()
    with pytest.raises(FileNotFoundError, match="--archive"):
        prepare_imagewoof(tmp_path / "e", "160", archive=tmp_path / "nope.tgz")
    with pytest.raises(ValueError, match="Unknown ImageWoof size"):
        prepare_imagewoof(tmp_path / "e", "64", archive=archive)


def test_path_traversal_and_outside_links_are_refused(tmp_path: Path):
    for name, kind in (("../evil.txt", "file"), ("/abs/evil.txt", "file"), ("ok/link", "symlink")):
        bad = tmp_path / f"bad-{kind}-{abs(hash(name))}.tar"
        with tarfile.open(bad, "w") as tar:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
                tar.addfile(info)
            else:
                info.size = 4
                tar.addfile(info, io.BytesIO(b"evil"))
        root = tmp_path / f"root-{bad.stem}"
        with pytest.raises(ValueError, match="refusing to extract"):
            extract_archive(bad, root)
        assert not (tmp_path / "evil.txt").exists()
        assert not any(p.name != "." for p in root.rglob("*"))


def test_truncated_archive_fails_verification(tmp_path: Path, archive: Path):
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a complete tar archive"):
        verify_archive(cut)
    assert verify_archive(archive) == 12


def test_cli_prepare_and_info(tmp_path: Path, archive: Path):
    runner = CliRunner()
    url = f"http://127.0.0.1:{_closed_port()}/imagewoof2-160.tgz"
    r = runner.invoke(app, ["data", "prepare", "imagewoof", "--root", str(tmp_path / "x"), "--url", url])
    assert r.exit_code == 1 and "download it elsewhere and pass --archive FILE" in r.output
    r = runner.invoke(app, ["data", "prepare", "imagenet", "--root", str(tmp_path / "x")])
    assert r.exit_code == 1 and "Unknown data set 'imagenet'" in r.output
    r = runner.invoke(app, ["data", "prepare", "imagewoof", "--root", str(tmp_path / "y"), "--archive", str(archive)])
    assert r.exit_code == 0, r.output
    assert "FORGELAB_DATA=" in r.output
    (tmp_path / "y" / "imagewoof2-160" / "val" / "broken.JPEG").write_bytes(b"")
    r = runner.invoke(app, ["data", "info", str(tmp_path / "y" / "imagewoof2-160")])
    assert r.exit_code == 0, r.output
    assert re.search(r"^files\s+13$", r.output, re.M) and re.search(r"^readable\s+12$", r.output, re.M)
    assert "JPEG: 12" in r.output and "32x24: 12" in r.output and "broken.JPEG: empty file" in r.output
