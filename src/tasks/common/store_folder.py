"""The folder a converted feature store lives in, and what keeps it safe.

- A marker file, written first into every store this program starts: a folder at the store's
  path is replaced (reconverted) only when it carries that marker (or, for stores written
  before markers existed, a manifest of this program's format). Anything else there is the
  user's, and is refused by name instead of being deleted.
- The conversion lock: one converter per store; the lock file is removed when its holder is
  done, so nothing is left beside the TSV, even after a failure.
- Installing a finished store, and removing the temporaries of interrupted conversions
  (only those carrying the marker).
- Cheap fingerprints: of the source TSV (its size, head, tail and samples in between) and of
  the store's data files, recorded in the manifest and checked when a store is opened, so a
  file changed in place (same size, even the same mtime) is noticed without reading it whole.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import time
import uuid
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

STORE_FORMAT = "lxrt-feature-store"
MANIFEST = "manifest.json"
MARKER = "lxrt_store.marker"

# fingerprints: this many evenly spaced blocks of this size (head and tail included)
SAMPLE_BLOCKS = 9
SAMPLE_BYTES = 4096


class ForeignFolderError(FileExistsError):
    """A folder at a store's path that this program did not create; it is left alone."""


# ---- the marker ------------------------------------------------------------------------------

def write_marker(folder: Path, source: str) -> None:
    """The first file of a store being written: the folder is ours from here on."""
    info = {"format": STORE_FORMAT, "source": os.path.abspath(source), "pid": os.getpid(),
            "host": platform.node(), "started": time.time()}
    (Path(folder) / MARKER).write_text(json.dumps(info) + "\n")


def _names_our_format(path: Path) -> bool:
    """`path` is a JSON object whose "format" is ours."""
    try:
        with open(path) as f:
            return json.load(f).get("format") == STORE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def is_own_folder(folder: Path) -> bool:
    """A store this program started: its marker, or (stores written before markers existed)
    a manifest of our format."""
    folder = Path(folder)
    return _names_our_format(folder / MARKER) or _names_our_format(folder / MANIFEST)


def check_replaceable(store_dir: Path) -> None:
    """Raise ForeignFolderError unless `store_dir` is absent, an empty folder, or a store this
    program wrote (complete, stale or half-written)."""
    store_dir = Path(store_dir)
    if not os.path.lexists(store_dir):
        return
    if store_dir.is_dir() and not store_dir.is_symlink():
        if is_own_folder(store_dir) or not any(store_dir.iterdir()):
            return
        what = "a folder this program did not create (it has no " + MARKER + ")"
    elif store_dir.is_symlink():
        what = f"a symbolic link (to {os.readlink(store_dir)}) holding no complete store"
    else:
        what = "a file, not a feature store folder"
    raise ForeignFolderError(
        errno.EEXIST, f"{store_dir} is {what}; a converted feature store would replace it, so "
                      f"nothing was changed. Move it away (or delete it yourself), or give the "
                      f"store another place (--featureCache / --out)", str(store_dir))


# ---- installing and cleaning up ----------------------------------------------------------------

def fsync_write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_dir(out_dir: Path, kind: str = "tmp") -> Path:
    """A hidden name next to `out_dir` that `clean_stale` recognises: .<name>.<kind>-<pid>-<hex>."""
    return out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def clean_stale(out_dir: Path) -> None:
    """Remove the temporary and replaced folders that interrupted conversions of this store
    left, when their process is dead and they carry the marker."""
    parent = out_dir.parent
    if not parent.is_dir():
        return
    for p in parent.glob(f".{out_dir.name}.*-*-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[1])
        except (ValueError, IndexError):
            continue
        if p.is_dir() and not p.is_symlink() and not pid_alive(pid) and is_own_folder(p):
            shutil.rmtree(p, ignore_errors=True)


def install(tmp: Path, out_dir: Path) -> None:
    """Atomically move a finished store into place, replacing an old or invalid store of
    ours (never a folder of someone else's: ForeignFolderError)."""
    for _ in range(5):
        try:
            os.rename(tmp, out_dir)  # also replaces an empty folder
            return
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                raise
        check_replaceable(out_dir)
        old = temporary_dir(out_dir, "old")
        try:
            os.rename(out_dir, old)
        except FileNotFoundError:
            continue
        shutil.rmtree(old, ignore_errors=True)
    raise OSError(f"could not install feature store {tmp} -> {out_dir}")


@contextlib.contextmanager
def store_lock(store_dir):
    """An exclusive ``flock`` on ``.<store name>.lock`` next to the store, held while the
    store is (re)converted. The kernel drops the lock when its holder dies; the holder removes
    the file when done (or failed). A process that locked a file another one has just removed
    sees a different inode at the path and starts over, so two processes never hold locks
    on different files at once."""
    store_dir = Path(store_dir)
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = store_dir.parent / f".{store_dir.name}.lock"
    while True:
        handle = open(lock_path, "a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process converting %s (lock %s)", store_dir,
                     lock_path)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # removed (or replaced) by the previous holder: lock the new one
    try:
        yield lock_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


# ---- fingerprints --------------------------------------------------------------------------------

def sampled_digest(path, size: Optional[int] = None) -> str:
    """sha1 of the size and SAMPLE_BLOCKS evenly spaced blocks of the file (head and tail
    included): a file replaced or rewritten in place is caught by a few small reads."""
    size = os.path.getsize(path) if size is None else size
    h = hashlib.sha1(str(size).encode())
    with open(path, "rb") as f:
        if size <= SAMPLE_BLOCKS * SAMPLE_BYTES:
            h.update(f.read())
        else:
            last = size - SAMPLE_BYTES
            for k in range(SAMPLE_BLOCKS):
                f.seek(last * k // (SAMPLE_BLOCKS - 1))
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
