"""Flickr30k retrieval readers: caption annotations and the ViLBERT hard-negative pool
(reference.md §3.4-3.5). The datasets that build training pairs and evaluation matrices live
elsewhere; they read these.

Annotations: a JSON list of {"img_path": "<int>.jpg", "sentences": [captions...], ...}.
The feature TSV's `img_id` equals `img_path` exactly ("1007129816.jpg").

hard_negative.pkl: a pickled dict (read with an unpickler that admits only plain data and numpy
arrays, so the file cannot run code) with at least
    train_image_list: sequence of int image ids (N)
    train_hard_pool:  2-D [N, K] indices into train_image_list; column 0 (the image itself) is
                      skipped when sampling, so K >= 2.
Every item of the dict is kept (`HardNegatives.extra`), like the authors' setattr loop.
"""
from __future__ import annotations

import numbers
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.common.qa_data import DataFormatError, read_records


def image_id_of(img_path: str) -> int:
    """`int(img_path.split('.')[0])`, as the authors."""
    return int(img_path.split(".")[0])


@dataclass
class FlickrAnnotations:
    """Validated Flickr30k annotations, in file order."""
    path: Path
    data: list[dict]                  # raw entries
    img_paths: list[str]              # == TSV img_id
    image_ids: list[int]              # int(img_path.split('.')[0])
    captions: list[list[str]]         # per image

    def __len__(self) -> int:
        return len(self.data)

    @property
    def num_images(self) -> int:
        return len(self.data)

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.captions)

    @property
    def caption_counts(self) -> list[int]:
        return [len(c) for c in self.captions]

    @property
    def captions_per_image(self) -> int | None:
        """The caption count shared by every image (5 for Flickr30k), or None if it varies."""
        counts = set(self.caption_counts)
        return counts.pop() if len(counts) == 1 else None

    def caption_count_histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(self.caption_counts).items()))

    def flat_captions(self) -> list[tuple[int, str]]:
        """(image index, caption) in image-major order, as the IR evaluation enumerates them."""
        return [(i, s) for i, caps in enumerate(self.captions) for s in caps]

def load_flickr_annotations(path: str | Path) -> FlickrAnnotations:
    """Read and validate a Flickr30k annotation file. Errors name the file, index and key."""
    path = Path(path)
    data = read_records(path, "images", ("img_path", "sentences"))
    img_paths, image_ids, captions = [], [], []
    seen: dict[str, int] = {}
    for i, entry in enumerate(data):
        where = f"{path}: item {i}"
        img_path = entry["img_path"]
        if not isinstance(img_path, str):
            raise DataFormatError(f"{where}: key 'img_path' must be a string, got {img_path!r}")
        try:
            image_id = image_id_of(img_path)
        except ValueError:
            raise DataFormatError(f"{where}: key 'img_path' {img_path!r} does not start with "
                                  f"an integer image id ('<int>.jpg')") from None
        if img_path in seen:
            raise DataFormatError(f"{where}: key 'img_path' {img_path!r} repeats item "
                                  f"{seen[img_path]}")
        seen[img_path] = i
        sents = entry["sentences"]
        if not isinstance(sents, list) or not sents:
            raise DataFormatError(f"{where}: key 'sentences' must be a non-empty list of "
                                  f"captions, got {sents!r}")
        for j, s in enumerate(sents):
            if not isinstance(s, str):
                raise DataFormatError(f"{where}: key 'sentences' item {j} is not a string: "
                                      f"{s!r}")
        img_paths.append(img_path)
        image_ids.append(image_id)
        captions.append(list(sents))
    return FlickrAnnotations(path, data, img_paths, image_ids, captions)


@dataclass
class HardNegatives:
    """The validated ViLBERT hard-negative pool."""
    path: Path
    train_image_list: np.ndarray   # int64 [N] image ids
    train_hard_pool: np.ndarray    # int64 [N, K] indices into train_image_list
    extra: dict = field(default_factory=dict)  # every other item of the pickle

    @property
    def num_images(self) -> int:
        return int(self.train_image_list.shape[0])

    @property
    def pool_size(self) -> int:
        return int(self.train_hard_pool.shape[1])

    @property
    def column0_is_self(self) -> bool:
        """True when column 0 of every pool row is the row's own image (the assumption behind
        skipping it, reference.md §9 #7)."""
        return bool(np.array_equal(self.train_hard_pool[:, 0], np.arange(self.num_images)))

    def index_of(self) -> dict[int, int]:
        """image id -> row of train_hard_pool (ViLBERT's train_imgId2pool)."""
        return {int(img): i for i, img in enumerate(self.train_image_list)}

    def check_images(self, image_ids) -> None:
        """Raise if an annotation image id is not in train_image_list."""
        known = set(int(x) for x in self.train_image_list)
        missing = [i for i in image_ids if int(i) not in known]
        if missing:
            raise DataFormatError(
                f"{self.path}: {len(missing)} training image ids are not in train_image_list "
                f"(e.g. {missing[:5]}); the pool does not match the annotations")


def _int_array(value, path, key, ndim):
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged nested lists
        raise DataFormatError(f"{path}: key {key!r} is not a regular array ({err})") from None
    if arr.dtype == object:
        raise DataFormatError(f"{path}: key {key!r} is not a regular {ndim}-D array of ints")
    if arr.ndim != ndim:
        raise DataFormatError(f"{path}: key {key!r} must be {ndim}-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise DataFormatError(f"{path}: key {key!r} must hold integers, "
                                  f"got dtype {arr.dtype}")
    return arr.astype(np.int64)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the data-only allow-list."""


# What a pickled dict of lists and numpy arrays needs (python 2 and 3, numpy 1 and 2). Any
# other global (os.system, builtins.eval, ...) is refused, so the file cannot run code.
_PICKLE_DATA_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"), ("collections", "OrderedDict"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_DATA_GLOBALS:
            raise UnsafePickleError(f"global {module}.{name}")
        return super().find_class(module, name)


def load_hard_negatives(path: str | Path) -> HardNegatives:
    """Read and validate `hard_negative.pkl`: shapes, index ranges, K >= 2."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            # the ViLBERT file may be a python-2 pickle
            obj = _DataOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"hard-negative file not found: {path}") from None
    except UnsafePickleError as err:
        raise DataFormatError(f"{path}: refused to unpickle {err}: the hard-negative file may "
                              f"only hold dicts, lists, numbers and numpy arrays") from None
    except Exception as err:
        raise DataFormatError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") \
            from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    for key in ("train_image_list", "train_hard_pool"):
        if key not in obj:
            raise DataFormatError(f"{path}: missing key {key!r} (keys: {sorted(map(str, obj))})")
    image_list = obj["train_image_list"]
    if not all(isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, bool)
               for x in image_list):
        bad = next(i for i, x in enumerate(image_list)
                   if not isinstance(x, (numbers.Integral, np.integer)) or isinstance(x, bool))
        raise DataFormatError(f"{path}: key 'train_image_list' item {bad} is not an int image "
                              f"id: {image_list[bad]!r}")
    images = _int_array(list(image_list), path, "train_image_list", 1)
    pool = _int_array(obj["train_hard_pool"], path, "train_hard_pool", 2)
    n = images.shape[0]
    if n == 0:
        raise DataFormatError(f"{path}: key 'train_image_list' is empty")
    if len(set(images.tolist())) != n:
        raise DataFormatError(f"{path}: key 'train_image_list' has repeated image ids")
    if pool.shape[0] != n:
        raise DataFormatError(f"{path}: key 'train_hard_pool' has {pool.shape[0]} rows but "
                              f"train_image_list has {n} images")
    if pool.shape[1] < 2:
        raise DataFormatError(f"{path}: key 'train_hard_pool' has K={pool.shape[1]} columns; "
                              f"K >= 2 is needed (column 0 is skipped when sampling)")
    bad = np.argwhere((pool < 0) | (pool >= n))
    if bad.size:
        r, c = bad[0]
        raise DataFormatError(f"{path}: key 'train_hard_pool' row {r} column {c} holds "
                              f"{pool[r, c]}, outside [0, {n}) (indices into train_image_list)")
    extra = {k: v for k, v in obj.items() if k not in ("train_image_list", "train_hard_pool")}
    return HardNegatives(path, images, pool, extra)
