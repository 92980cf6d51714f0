"""Feature store: LXMERT's base64 TSV features, converted once into memory-mapped files.

The authors parse every TSV completely into RAM at every start (``load_obj_tsv``). Here a TSV
is streamed once, row by row, into a directory of raw little-endian arrays that are then
memory-mapped read-only, so any number of DataLoader workers share the OS page cache and a
process holds only the rows it is reading.

Store layout (``<stem>.store/``, version ``STORE_VERSION``). T = total boxes, N = rows::

    lxrt_store.marker written first: this program made the folder (store_folder.py)
    manifest.json     written last; its presence (with matching file sizes) marks a complete
                      store; it holds fingerprints of the source TSV and of every file
    features.bin      [T, D] float32 (or float16 with fp16=True)
    boxes.bin         [T, 4] float32, normalised the authors' way: boxes / (w,h,w,h) in float32
    boxes_px.bin      [T, 4] float32, pixel x1,y1,x2,y2 as in the TSV
    objects_id.bin    [T] int64      objects_conf.bin [T] float32
    attrs_id.bin      [T] int64      attrs_conf.bin   [T] float32
    offsets.npy       [N+1] int64   rows i's boxes are [offsets[i], offsets[i+1])
    img_hw.npy        [N, 2] int64  (img_h, img_w)
    img_ids.json      [N] str, file order

Rows are ragged (per-row ``num_boxes`` via offsets), so images with different box counts are
supported without padding; when every row has the same n (36 for LXMERT), ``features.bin`` is
exactly a contiguous [N, n, D] array (``manifest["uniform_num_boxes"] == n``; see
``FeatureStore.dense()``).

A raw memmap was chosen over HDF5 by measurement (bench/bench_features.py): random reads of
one [36, 2048] item are a slice of a mapped file, with no library locks and nothing to reopen
but a file mapping after fork.

Duplicate img_ids follow the authors' ``dict`` semantics: the last row wins, and ``img_ids``
lists each id once, at its first position.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from .store_folder import (MANIFEST, STORE_FORMAT, bytes_digest, check_replaceable,
                           clean_stale, fsync_write_json, install, is_own_folder,
                           sampled_digest, store_lock, temporary_dir, write_marker)
from .tsv_format import ImageFeatures, TSVFormatError, decode_row, normalise_boxes

log = logging.getLogger(__name__)

STORE_VERSION = 1
ENV_CACHE = "LXRT_FEATURE_CACHE"

DEFAULT_HINT = (
    "LXMERT's pre-extracted Faster R-CNN features (36 boxes x 2048-d per image) are downloaded "
    "as described in LXMERT's README (https://github.com/airsplay/lxmert, sections 'VQA', "
    "'GQA', 'NLVR2'), e.g. `wget https://nlp.cs.unc.edu/data/lxmert_data/mscoco_imgfeat/"
    "train2014_obj36.zip -P data/mscoco_imgfeat` then unzip it there.")

# name -> (dtype, per-box shape); features' dtype/shape come from the manifest
_BOX_ARRAYS = {
    "boxes": (np.float32, (4,)),
    "boxes_px": (np.float32, (4,)),
    "objects_id": (np.int64, ()),
    "objects_conf": (np.float32, ()),
    "attrs_id": (np.int64, ()),
    "attrs_conf": (np.float32, ()),
}


def _limit(topk) -> Optional[int]:
    """Authors' topk: None or -1 means all lines (their ``len(data) == topk`` never matches
    for topk <= 0, so 0 also means all)."""
    if topk is None:
        return None
    topk = int(topk)
    return topk if topk > 0 else None


def _missing(path, hint=None, extra="") -> FileNotFoundError:
    msg = f"feature file not found: {path}{extra}. {hint or DEFAULT_HINT}"
    return FileNotFoundError(errno.ENOENT, msg, str(path))


# --------------------------------------------------------------------------------------------
# TSV streaming

def _iter_lines(path: str, limit: Optional[int]) -> Iterator[Tuple[int, bytes]]:
    """(line number, raw line) for each non-blank line (csv.DictReader skips blank rows)."""
    count = 0
    if limit == 0:
        return
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip(b"\r\n"):
                continue
            yield lineno, line
            count += 1
            if limit is not None and count >= limit:
                return


def iter_tsv(path, topk=None, hint: Optional[str] = None,
             check_boxes: bool = True) -> Iterator[ImageFeatures]:
    """Stream the rows of an LXMERT feature TSV as validated ``ImageFeatures``.

    Reads one line at a time (lines are split on tabs, equivalent to the authors' csv reader
    with ``field_size_limit(sys.maxsize)`` for these files). ``topk`` None/-1 = all rows,
    else the first ``topk``. Malformed rows raise ``ValueError`` naming file, line and img_id;
    a missing file raises ``FileNotFoundError`` (immediately, not at the first ``next``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise _missing(path, hint)
    limit = _limit(topk)

    def gen():
        for lineno, line in _iter_lines(path, limit):
            yield decode_row(line, path, lineno, check_boxes=check_boxes)
    return gen()


# --------------------------------------------------------------------------------------------
# manifest / validity

def _source_info(tsv_path) -> Optional[dict]:
    try:
        st = os.stat(tsv_path)
    except FileNotFoundError:
        return None
    return {"path": os.path.abspath(tsv_path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_manifest(store_dir) -> Optional[dict]:
    """The manifest of a complete, intact store, or None (missing, truncated, wrong version,
    or a data file whose size differs from what the manifest says)."""
    store_dir = Path(store_dir)
    try:
        with open(store_dir / MANIFEST) as f:
            man = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(man, dict) or man.get("format") != STORE_FORMAT \
            or man.get("version") != STORE_VERSION or not man.get("finished"):
        return None
    try:
        for name, info in man["files"].items():
            if os.path.getsize(store_dir / name) != info["bytes"]:
                return None
    except (OSError, KeyError, TypeError):
        return None
    return man


def _source_matches(man: dict, src: Optional[dict]) -> bool:
    """The store was converted from this TSV as it is now: same size and mtime, and (for
    stores that recorded it) the same sampled fingerprint, which catches a TSV rewritten in
    place with its mtime put back."""
    if src is None:  # TSV gone: trust the complete store
        return True
    s = man.get("source", {})
    if s.get("size") != src["size"] or s.get("mtime_ns") != src["mtime_ns"]:
        return False
    return "fingerprint" not in s or s["fingerprint"] == sampled_digest(src["path"])


def _covers(man: dict, limit: Optional[int]) -> bool:
    return bool(man.get("complete")) or (limit is not None and man["rows"] >= limit)


# --------------------------------------------------------------------------------------------
# conversion

def convert_tsv_to_store(tsv_path, out_dir, fp16: bool = False, topk=None,
                         progress: bool = True, hint: Optional[str] = None) -> Path:
    """Convert an LXMERT feature TSV into a store directory in one streaming pass.

    Writes into a hidden temp directory next to ``out_dir`` and renames it into place only
    after every file and finally the manifest are written and fsynced, so an interrupted
    conversion never leaves a directory that ``read_manifest`` accepts. Memory use is one row.
    """
    tsv_path = os.fspath(tsv_path)
    src = _source_info(tsv_path)
    if src is None:
        raise _missing(tsv_path, hint)
    limit = _limit(topk)
    out_dir = Path(out_dir)
    check_replaceable(out_dir)  # before any work: a folder of the user's is never replaced
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir)
    src["fingerprint"] = sampled_digest(tsv_path, src["size"])
    tmp = temporary_dir(out_dir)
    tmp.mkdir()
    t0 = time.time()
    feat_dtype = np.float16 if fp16 else np.float32
    bar = None
    try:
        write_marker(tmp, tsv_path)
        if progress:
            from tqdm import tqdm
            bar = (tqdm(total=limit, unit="img", desc=f"convert {os.path.basename(tsv_path)}")
                   if limit else
                   tqdm(total=src["size"], unit="B", unit_scale=True, unit_divisor=1024,
                        desc=f"convert {os.path.basename(tsv_path)}"))
        names = ["features"] + list(_BOX_ARRAYS)
        files = {n: open(tmp / f"{n}.bin", "wb", buffering=1 << 22) for n in names}
        offsets, hw, ids = [0], [], []
        feat_dim = None
        nb_set = set()
        try:
            for lineno, line in _iter_lines(tsv_path, limit):
                item = decode_row(line, tsv_path, lineno, check_boxes=True)
                n, d = item.features.shape
                if feat_dim is None:
                    feat_dim = d
                elif d != feat_dim:
                    raise TSVFormatError(
                        f"{tsv_path}:{lineno}: img_id {item.img_id!r}: feature dim {d} differs "
                        f"from the first row's {feat_dim}")
                feats = item.features
                if fp16:
                    feats = feats.astype(np.float16)
                    if not np.isfinite(feats).all() and np.isfinite(item.features).all():
                        raise TSVFormatError(
                            f"{tsv_path}:{lineno}: img_id {item.img_id!r}: features overflow "
                            f"float16 (max |x| = {float(np.abs(item.features).max())}); "
                            f"convert without --fp16")
                files["features"].write(np.ascontiguousarray(feats).data)
                files["boxes"].write(
                    normalise_boxes(item.boxes, item.img_h, item.img_w).data)
                files["boxes_px"].write(np.ascontiguousarray(item.boxes).data)
                for k in ("objects_id", "objects_conf", "attrs_id", "attrs_conf"):
                    files[k].write(np.ascontiguousarray(getattr(item, k)).data)
                offsets.append(offsets[-1] + n)
                hw.append((item.img_h, item.img_w))
                ids.append(item.img_id)
                nb_set.add(n)
                if bar is not None:
                    bar.update(1 if limit else len(line))
            for f in files.values():
                f.flush()
                os.fsync(f.fileno())
        finally:
            for f in files.values():
                f.close()
        rows = len(ids)
        if rows == 0:
            raise ValueError(f"{tsv_path}: no rows (empty feature file)")
        # complete = the store holds every row of the TSV
        complete = True
        if limit is not None and rows >= limit:
            complete = next(_iter_tail(tsv_path, limit), None) is None
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        np.save(tmp / "img_hw.npy", np.asarray(hw, dtype=np.int64).reshape(rows, 2))
        with open(tmp / "img_ids.json", "w") as f:
            json.dump(ids, f)
        total = offsets[-1]
        file_info = {"features.bin": {"dtype": np.dtype(feat_dtype).name,
                                      "shape": [total, feat_dim]}}
        for k, (dt, shp) in _BOX_ARRAYS.items():
            file_info[f"{k}.bin"] = {"dtype": np.dtype(dt).name, "shape": [total, *shp]}
        for name in list(file_info) + ["offsets.npy", "img_hw.npy", "img_ids.json"]:
            info = file_info.setdefault(name, {})
            info["bytes"] = os.path.getsize(tmp / name)
            if name.endswith(".bin"):  # checked at every open: a few small reads
                info["sampled_sha1"] = sampled_digest(tmp / name, info["bytes"])
            else:  # index files are read whole at every open anyway
                info["sha1"] = bytes_digest((tmp / name).read_bytes())
        man = {
            "format": STORE_FORMAT, "version": STORE_VERSION, "finished": True,
            "source": src, "rows": rows, "complete": complete, "topk": limit,
            "total_boxes": total, "feat_dim": feat_dim,
            "feat_dtype": np.dtype(feat_dtype).name,
            "uniform_num_boxes": nb_set.pop() if len(nb_set) == 1 else None,
            "duplicates": rows - len(set(ids)),
            "seconds": round(time.time() - t0, 3), "created": time.time(),
            "files": file_info,
        }
        if man["duplicates"]:
            log.warning("%s: %d duplicate img_ids (the last row wins, as in the authors' "
                           "dict)", tsv_path, man["duplicates"])
        fsync_write_json(tmp / MANIFEST, man)
        install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return out_dir


def _iter_tail(path: str, skip: int) -> Iterator[bytes]:
    """Non-blank lines after the first ``skip`` non-blank ones (stops at the first)."""
    seen = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip(b"\r\n"):
                continue
            seen += 1
            if seen > skip:
                yield line
                return


# --------------------------------------------------------------------------------------------
# store

def _f16_to_f32(a: np.ndarray) -> np.ndarray:
    """float16 -> float32 copy; torch's vectorised (F16C) cast is ~10x numpy's astype."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return a.astype(np.float32)
    return torch.from_numpy(a.copy()).float().numpy()


class CorruptStoreError(ValueError):
    """A converted store's files do not agree with its manifest."""


def _corrupt(store_dir: Path, what: str) -> CorruptStoreError:
    return CorruptStoreError(f"feature store {store_dir} is corrupt ({what}); delete the "
                             f"directory {store_dir} and it is reconverted from its TSV on the "
                             f"next run")


def _check_data_files(store_dir: Path, man: dict) -> None:
    """The sampled fingerprint of each data file, against the manifest (a file copied over or
    rewritten in place keeps its size, so `read_manifest` alone does not see it)."""
    for name, info in man["files"].items():
        recorded = info.get("sampled_sha1")
        if recorded is not None and recorded != sampled_digest(store_dir / name, info["bytes"]):
            raise _corrupt(store_dir, f"{name} was changed after the store was written (its "
                                      f"sampled fingerprint differs from the one in {MANIFEST})")


def _read_index(store_dir: Path, man: dict):
    """(img_ids, offsets, img_hw) of a store, checked against the manifest: file sizes alone
    (``read_manifest``) do not catch bytes garbled in place, which would otherwise surface as
    wrong features or an IndexError deep inside a DataLoader worker."""
    rows, total = man["rows"], man["total_boxes"]

    def corrupt(what):
        return _corrupt(store_dir, what)
    try:
        raw = {name: (store_dir / name).read_bytes()
               for name in ("img_ids.json", "offsets.npy", "img_hw.npy")}
        for name, data in raw.items():
            recorded = man["files"][name].get("sha1")  # absent in stores of older versions
            if recorded is not None and recorded != bytes_digest(data):
                raise corrupt(f"{name} differs from the file the store was written with "
                              f"(its sha1 is not the one in {MANIFEST})")
        row_ids = json.loads(raw["img_ids.json"].decode("utf-8"))
        offsets = np.load(io.BytesIO(raw["offsets.npy"]), allow_pickle=False)
        hw = np.load(io.BytesIO(raw["img_hw.npy"]), allow_pickle=False)
    except (ValueError, UnicodeDecodeError, OSError, EOFError) as err:
        if isinstance(err, CorruptStoreError):
            raise
        raise corrupt(f"{type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(row_ids, list) or len(row_ids) != rows \
            or not all(isinstance(i, str) for i in row_ids):
        raise corrupt(f"img_ids.json is not a list of {rows} strings")
    if offsets.dtype != np.int64 or offsets.shape != (rows + 1,) or offsets[0] != 0 \
            or offsets[-1] != total or np.any(np.diff(offsets) <= 0):
        raise corrupt(f"offsets.npy is not {rows + 1} increasing int64 from 0 to {total}")
    if hw.dtype != np.int64 or hw.shape != (rows, 2) or np.any(hw <= 0):
        raise corrupt(f"img_hw.npy is not [{rows}, 2] positive int64")
    return row_ids, offsets, hw


class FeatureStore:
    """Read-only view of a converted store (optionally only its first ``limit`` rows).

    Picklable; the memory maps are opened lazily on first access in each process (the pid
    is recorded and the maps reopened after a fork), so DataLoader workers share the page
    cache and the parent never maps anything unless it reads.
    """

    def __init__(self, store_dir, limit: Optional[int] = None):
        self.store_dir = Path(store_dir)
        man = read_manifest(self.store_dir)
        if man is None:
            raise ValueError(f"{self.store_dir} is not a complete feature store "
                             f"(missing/invalid {MANIFEST}); delete it and reconvert it")
        limit = _limit(limit)
        if limit is not None and limit > man["rows"] and not man["complete"]:
            raise ValueError(f"{self.store_dir} holds only the first {man['rows']} rows, "
                             f"{limit} requested; reconvert it")
        self.manifest = man
        self.num_rows = man["rows"] if limit is None else min(limit, man["rows"])
        self.fp16 = man["feat_dtype"] == "float16"
        self.feat_dim = man["feat_dim"]
        _check_data_files(self.store_dir, man)
        row_ids, offsets, hw = _read_index(self.store_dir, man)
        row_ids = row_ids[: self.num_rows]
        index = {}
        for i, img_id in enumerate(row_ids):
            index[img_id] = i  # dict semantics: last row wins, first position kept
        self._index = index
        self.img_ids = list(index)
        self._offsets = offsets[: self.num_rows + 1]
        self._offsets_list = self._offsets.tolist()  # python ints: fastest per-item lookup
        self._hw = hw[: self.num_rows]
        self._row_ids = row_ids
        n = man["uniform_num_boxes"]
        self.num_boxes = n  # None when rows differ
        self._maps = None
        self._pid = None

    # -- lazy per-process opening ------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._maps is not None and self._pid == os.getpid()

    def _arrays(self) -> dict:
        pid = os.getpid()
        if self._maps is None or self._pid != pid:
            maps = {}
            for name, info in self.manifest["files"].items():
                if not name.endswith(".bin"):
                    continue
                shape = tuple(info["shape"])
                if shape[0] == 0:
                    maps[name[:-4]] = np.zeros(shape, dtype=info["dtype"])
                else:
                    # plain ndarray views on the mapping: slicing an np.memmap subclass
                    # costs ~2x more per item (python __array_finalize__)
                    maps[name[:-4]] = np.memmap(self.store_dir / name, dtype=info["dtype"],
                                                mode="r", shape=shape).view(np.ndarray)
            self._maps, self._pid = maps, pid
        return self._maps

    def close(self) -> None:
        self._maps, self._pid = None, None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"], state["_pid"] = None, None
        return state

    # -- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.img_ids)

    def __contains__(self, img_id) -> bool:
        return img_id in self._index

    def __iter__(self):
        return iter(self.img_ids)

    def index_of(self, img_id) -> int:
        try:
            return self._index[img_id]
        except KeyError:
            raise KeyError(f"img_id {img_id!r} not in feature store {self.store_dir} "
                           f"({self.num_rows} rows)") from None

    def _span(self, i: int) -> Tuple[int, int]:
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {i} out of range for {self.store_dir} "
                             f"({self.num_rows} rows)")
        return self._offsets_list[i], self._offsets_list[i + 1]

    def row(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """(feats float32 [n,D], normalised boxes float32 [n,4]) of row ``i``, as copies."""
        s, e = self._span(i)
        a = self._arrays()
        f = a["features"][s:e]
        return (_f16_to_f32(f) if self.fp16 else f.copy(), a["boxes"][s:e].copy())

    def __getitem__(self, img_id) -> Tuple[np.ndarray, np.ndarray]:
        return self.row(self.index_of(img_id))

    def image_size(self, img_id) -> Tuple[int, int]:
        """(img_h, img_w)."""
        h, w = self._hw[self.index_of(img_id)]
        return int(h), int(w)

    def get_row(self, i: int) -> ImageFeatures:
        """Row ``i`` in file order as ``ImageFeatures`` (pixel boxes, features as float32)."""
        s, e = self._span(i)
        a = self._arrays()
        h, w = self._hw[i]
        return ImageFeatures(
            img_id=self._row_ids[i], img_h=int(h), img_w=int(w),
            objects_id=np.array(a["objects_id"][s:e]),
            objects_conf=np.array(a["objects_conf"][s:e]),
            attrs_id=np.array(a["attrs_id"][s:e]),
            attrs_conf=np.array(a["attrs_conf"][s:e]),
            boxes=np.array(a["boxes_px"][s:e]),
            features=_f16_to_f32(a["features"][s:e]) if self.fp16 else a["features"][s:e].copy())

    def dense(self) -> Tuple[np.ndarray, np.ndarray]:
        """Read-only memmap views (features [N,n,D] (stored dtype), boxes [N,n,4]) of the
        rows in view; requires every row to have the same num_boxes."""
        if self.num_boxes is None:
            raise ValueError(f"{self.store_dir}: rows have different num_boxes; no dense view")
        a = self._arrays()
        t = self.num_rows * self.num_boxes
        return (a["features"][:t].reshape(self.num_rows, self.num_boxes, self.feat_dim),
                a["boxes"][:t].reshape(self.num_rows, self.num_boxes, 4))

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.store_dir)!r}, rows={self.num_rows}, "
                f"dim={self.feat_dim}, dtype={self.manifest['feat_dtype']})")


# --------------------------------------------------------------------------------------------
# entry point

def store_path_for(tsv_path, cache_dir=None, fp16: bool = False) -> Path:
    """Where the store of ``tsv_path`` lives: ``<dir>/<stem>.store`` (``.fp16.store``) next to
    the TSV, or ``<cache_dir>/<stem>-<hash of the TSV's absolute path>.store`` when a cache dir
    is given (argument, else env ``LXRT_FEATURE_CACHE``). A read-only TSV directory falls back
    to ``~/.cache/lxrt_features``."""
    tsv = Path(tsv_path)
    stem = tsv.name[:-4] if tsv.name.endswith(".tsv") else tsv.name
    suffix = ".fp16.store" if fp16 else ".store"
    cache_dir = cache_dir or os.environ.get(ENV_CACHE) or None
    if cache_dir:
        h = hashlib.sha1(os.path.abspath(tsv).encode()).hexdigest()[:10]
        return Path(cache_dir) / f"{stem}-{h}{suffix}"
    parent = tsv.parent
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        # read-only data directory: fall back to a per-user cache
        return store_path_for(tsv_path, Path.home() / ".cache" / "lxrt_features", fp16)
    return parent / f"{stem}{suffix}"


def open_feature_store(tsv_path, cache_dir=None, fp16: bool = False, topk=None,
                       hint: Optional[str] = None, progress: bool = True) -> FeatureStore:
    """A ``FeatureStore`` for ``tsv_path``, converting the TSV on first use.

    Reuses a valid cached store (complete manifest, same source size and mtime); ``topk``
    (first K rows: minival 5000, --tiny, --fast) is a view on it. Without a store, a ``topk``
    request converts only the first K rows (recorded as a partial store); a later request for
    more rows reconverts. If the TSV is missing but a valid store covering the request
    exists, the store is used.
    """
    limit = _limit(topk)
    store_dir = store_path_for(tsv_path, cache_dir, fp16)
    if _usable_store(store_dir, tsv_path, limit, hint) is not None:
        check_replaceable(store_dir)  # a folder of the user's there: refused, lock not taken
        # One converter per store: the ranks of a DDP run (or two jobs on one node) that
        # find no store queue here; the first converts, the others then find its store.
        with store_lock(store_dir):
            src = _usable_store(store_dir, tsv_path, limit, hint, log_changed=True)
            if src is not None:
                log.info("converting %s -> %s", tsv_path, store_dir)
                convert_tsv_to_store(tsv_path, store_dir, fp16=fp16, topk=limit,
                                     progress=progress, hint=hint)
    return FeatureStore(store_dir, limit=limit)


def _usable_store(store_dir: Path, tsv_path, limit, hint=None, log_changed: bool = False):
    """None when ``store_dir`` holds a valid store of ``tsv_path`` covering ``limit`` rows,
    else the TSV's source info (what a conversion needs); raises if the TSV is missing too."""
    src = _source_info(tsv_path)
    man = read_manifest(store_dir)
    if man is not None and not _source_matches(man, src):
        if log_changed:
            log.info("%s: source %s changed; reconverting", store_dir, tsv_path)
        man = None
    if man is not None and _covers(man, limit):
        return None
    if src is None:
        state = ("does not exist" if not store_dir.exists() else
                 "is incomplete or corrupt: delete it" if is_own_folder(store_dir) else
                 "is not a feature store this program wrote")
        raise _missing(tsv_path, hint, f" (and no usable converted store: {store_dir} {state})")
    return src
