"""Fetch and unpack data sets: resumable HTTP downloads, archive checks, extraction that stays inside its folder.

ImageWoof comes from fast.ai's official archives. A download goes to ``NAME.part`` and is
resumed with an HTTP Range request when it breaks off (automatically a few times, and again
by running the same command). There is no published checksum, so an archive is verified by
its size (Content-Length / Content-Range) and by reading its whole tar listing; ``sha256``
adds a hash check when the user knows the hash. Extraction refuses members that would land
outside the target folder (absolute paths, ``..``, links pointing out, device files), unpacks
into a hidden temporary folder and moves the result into place with one rename, so a folder
that exists is complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pipelines.data.images import imagewoof_split
from plumbing.progress import progress_bar

IMAGEWOOF_BASE_URL = "https://s3.amazonaws.com/fast-ai-imageclas"
# --size -> archive stem (also the folder the archive unpacks to).
IMAGEWOOF_ARCHIVES: dict[str, str] = {
    "160": "imagewoof2-160",
    "320": "imagewoof2-320",
    "full": "imagewoof2",
}
CHUNK = 1 << 20


def imagewoof_url(size: str) -> str:
    """The official fast.ai archive URL for ImageWoof at ``size`` (160, 320 or full)."""
    return f"{IMAGEWOOF_BASE_URL}/{IMAGEWOOF_ARCHIVES[check_size(size)]}.tgz"


def check_size(size: str) -> str:
    """Return ``size`` if it names an ImageWoof archive, else raise a ValueError listing them."""
    size = str(size)
    if size not in IMAGEWOOF_ARCHIVES:
        raise ValueError(f"Unknown ImageWoof size {size!r}; choose one of: {', '.join(IMAGEWOOF_ARCHIVES)}.")
    return size


# ---------------------------------------------------------------------------------------------
# Download


def _total_from_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header such as 'bytes 100-199/200' or 'bytes */200'."""
    m = re.match(r"bytes\s+(\d+|\*)(?:-\d+)?/(\d+|\*)", value or "")
    if not m:
        return None, None
    first = None if m.group(1) == "*" else int(m.group(1))
    total = None if m.group(2) == "*" else int(m.group(2))
    return first, total


def _cannot_reach(url: str, reason: object) -> ConnectionError:
    return ConnectionError(
        f"Cannot reach {url} ({reason}); download it elsewhere and pass --archive FILE."
    )


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, sha256: str | None) -> None:
    """Raise a ValueError when ``sha256`` is given and the file's hash differs."""
    if sha256 is None:
        return
    got = sha256_of(path)
    if got.lower() != sha256.strip().lower():
        raise ValueError(
            f"{path} has SHA-256 {got}, not the expected {sha256}; delete it and download again."
        )


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, retries: int = 3,
             timeout: float = 30.0, progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming with HTTP Range after a break.

    Up to ``retries`` breaks are resumed within one call; after that the ``.part`` file stays
    and the same call resumes it later. The size is checked against the server's; ``sha256``
    is checked when given. A server that cannot be reached stops with one sentence.
    """
    dest = Path(dest)
    if dest.is_file():
        check_sha256(dest, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total: int | None = None
    breaks = 0
    # On a terminal only (a log gets no bar); kept on screen when done.
    with progress_bar(progress, f"Downloading {dest.name}", None, transient=False,
                      unit="bytes") as bar:
        while True:
            offset = part.stat().st_size if part.is_file() else 0
            headers = {"User-Agent": "forgelab"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
            except urllib.error.HTTPError as e:
                if e.code == 416 and offset:
                    # Nothing left to send: the .part is complete if its size is the server's.
                    _, total = _total_from_content_range(e.headers.get("Content-Range"))
                    if total == offset:
                        break
                    part.unlink()
                    continue
                raise ConnectionError(
                    f"{url} answered HTTP {e.code} ({e.reason}); check the URL, or download it elsewhere "
                    "and pass --archive FILE."
                ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                raise _cannot_reach(url, getattr(e, "reason", e)) from None
            try:
                with resp:
                    status = getattr(resp, "status", None) or resp.getcode()
                    first, range_total = _total_from_content_range(resp.headers.get("Content-Range"))
                    if offset and status == 206 and first == offset:
                        mode, total = "ab", range_total
                    else:  # the server ignored the Range request: start again from zero
                        offset, mode = 0, "wb"
                        length = resp.headers.get("Content-Length")
                        total = int(length) if length and length.isdigit() else None
                    done = offset
                    bar.update(completed=done, total=total)
                    with open(part, mode) as f:
                        while True:
                            block = resp.read(CHUNK)
                            if not block:
                                break
                            f.write(block)
                            done += len(block)
                            bar.update(completed=done, total=total)
                if total is None or done == total:
                    break
                if done > total:
                    part.unlink()
                    raise ValueError(f"{url} sent more bytes ({done}) than announced ({total}); run the command again.")
                raise http.client.IncompleteRead(b"", total - done)
            except (http.client.HTTPException, OSError) as e:
                breaks += 1
                if breaks > retries:
                    have = part.stat().st_size if part.is_file() else 0
                    of = f" of {total}" if total else ""
                    raise ConnectionError(
                        f"Download of {url} broke off at {have}{of} bytes ({type(e).__name__}); "
                        f"run the same command again to resume from {part}."
                    ) from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise ValueError(f"{part} has {size} bytes but the server announced {total}; delete it and download again.")
    check_sha256(part, sha256)
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# Archives


def verify_archive(path: str | os.PathLike) -> int:
    """Read the whole tar listing of ``path`` (any compression) and return its member count."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Archive {path} does not exist; check the path given to --archive.")
    try:
        with tarfile.open(path, "r:*") as tar:
            n = sum(1 for _ in tar)
    except (tarfile.TarError, EOFError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":")
        raise ValueError(
            f"{path} is not a complete tar archive ({reason}); delete it and download it again, or pass another --archive."
        ) from None
    if n == 0:
        raise ValueError(f"{path} is an empty archive; delete it and download it again.")
    return n


def _inside(root: Path, target: Path) -> bool:
    return target == root or root in target.parents


def safe_members(tar: tarfile.TarFile, root: str | os.PathLike) -> list[tarfile.TarInfo]:
    """All members of ``tar``, or a ValueError naming the first that would escape ``root`` or is a device."""
    root = Path(os.path.realpath(root))
    members = tar.getmembers()
    for m in members:
        name = m.name
        where = Path(os.path.realpath(root / name))
        if os.path.isabs(name) or name.startswith(("/", "\\")) or not _inside(root, where):
            raise ValueError(
                f"Archive member {name!r} would be written outside {root}; refusing to extract this archive."
            )
        if m.issym() or m.islnk():
            base = root if m.islnk() else where.parent
            target = Path(os.path.realpath(base / m.linkname))
            if os.path.isabs(m.linkname) or not _inside(root, target):
                raise ValueError(
                    f"Archive member {name!r} links to {m.linkname!r} outside {root}; refusing to extract this archive."
                )
        if m.isdev() or m.isfifo():
            raise ValueError(f"Archive member {name!r} is a device or pipe; refusing to extract this archive.")
    return members


def extract_archive(archive: str | os.PathLike, root: str | os.PathLike, *, progress: bool = False) -> list[Path]:
    """Extract a tar archive into ``root`` safely and atomically; return the top-level paths created."""
    archive, root = Path(archive), Path(root)
    verify_archive(archive)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".forgelab-extract-", dir=root))
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = safe_members(tar, tmp)
            tops = sorted({Path(m.name).parts[0] for m in members if Path(m.name).parts and Path(m.name).parts[0] != "."})
            clash = [t for t in tops if (root / t).exists()]
            if clash:
                raise FileExistsError(
                    f"{root / clash[0]} already exists; move it away or choose another --root before extracting {archive.name}."
                )
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            with progress_bar(progress, f"Extracting {archive.name}", len(members),
                              transient=False) as bar:
                tar.extractall(tmp, members=_counted(members, bar), **kwargs)
        for t in tops:
            os.replace(tmp / t, root / t)
        return [root / t for t in tops]
    except tarfile.TarError as e:
        raise ValueError(f"Cannot extract {archive} ({e}); delete it and download it again.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _counted(items, bar):
    """``items`` one by one, advancing ``bar`` after each."""
    for item in items:
        yield item
        bar.advance()


# ---------------------------------------------------------------------------------------------
# ImageWoof


def _is_imagewoof(folder: Path) -> bool:
    try:
        imagewoof_split(folder, "train")
        imagewoof_split(folder, "val")
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def prepare_imagewoof(root: str | os.PathLike, size: str = "160", *, archive: str | os.PathLike | None = None,
                      url: str | None = None, sha256: str | None = None, keep_archive: bool = False,
                      retries: int = 3, progress: bool = False) -> Path:
    """Download (or take ``archive``), verify and extract ImageWoof under ``root``; return the dataset folder.

    A complete copy already under ``root`` is returned as is. A downloaded archive is deleted
    after extraction unless ``keep_archive``; a local ``archive`` is never deleted.
    """
    size = check_size(size)
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; pass a folder to --root.")
    stem = IMAGEWOOF_ARCHIVES[size]
    target = root / stem
    if target.exists():
        if _is_imagewoof(target):
            return target
        raise FileExistsError(
            f"{target} exists but does not hold ImageWoof (train/<wnid>/, val/<wnid>/); move it away or choose another --root."
        )
    root.mkdir(parents=True, exist_ok=True)
    downloaded = archive is None
    if archive is None:
        src = url or imagewoof_url(size)
        archive = download(src, root / f"{stem}.tgz", sha256=sha256, retries=retries, progress=progress)
    else:
        archive = Path(archive).expanduser()
        if archive.is_dir():
            raise IsADirectoryError(f"Archive {archive} is a folder; give the .tgz file to --archive.")
        if not archive.is_file():
            raise FileNotFoundError(f"Archive {archive} does not exist; check the path given to --archive.")
        check_sha256(archive, sha256)
    created = extract_archive(archive, root, progress=progress)
    found = [p for p in created if p.is_dir() and _is_imagewoof(p)]
    if not found:
        raise ValueError(
            f"{Path(archive).name} did not contain ImageWoof in fast.ai's layout (train/<wnid>/, val/<wnid>/); "
            f"it was extracted into {root}; check that it is the right archive."
        )
    if downloaded and not keep_archive:
        Path(archive).unlink(missing_ok=True)
    return target if target in found else found[0]


# Data sets `forgelab data prepare NAME` knows, by name.
DATASETS: dict[str, Callable[..., Path]] = {"imagewoof": prepare_imagewoof}
