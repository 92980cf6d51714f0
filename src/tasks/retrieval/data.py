"""Flickr30k retrieval data: the readers (caption annotations, the ViLBERT hard-negative pool),
the evaluation splits (captions x images) and the 4-pair training set (docs/authors_code.md,
"Retrieval fine-tuning" and "Retrieval protocols").

Annotations: a JSON list of {"img_path": "<int>.jpg", "sentences": [captions...], ...}.
The feature TSV's `img_id` equals `img_path` exactly ("1007129816.jpg").

hard_negative.pkl: a pickled dict (read with an unpickler that admits only plain data and numpy
arrays, so the file cannot run code) with at least
    train_image_list: sequence of int image ids (N)
    train_hard_pool:  2-D [N, K] indices into train_image_list; column 0 (the image itself) is
                      skipped when sampling, so K >= 2.
Every item of the dict is kept (`HardNegatives.extra`), like the authors' setattr loop.

Splits (`SplitLoader.split`):
  train     flickr30k_train2014.json + .tsv (minus the `minival` images when they are held out)
  minival   a validation subset carved from the train images: `valid_images` images chosen
            with a fixed seed (0, independent of --seed) and kept in JSON order; held out of
            training and of the hard-negative pool when it is the validation split
  valid/val a held-out annotation file `flickr30k_{valid,val}2014.json` (+ .tsv) next to the
            other Flickr30k files, if one exists (the authors' `valid` meant the test file)
  test      flickr30k_test2014.json + .tsv (the authors: every non-train split is the test file)

Every caption is tokenized once, when the split is built. Captions are flat and image-major
(JSON order), as the authors enumerate them; `caption_to_image[c]` is the index of caption c's
image among the split's images (JSON order).

Training (`RetrievalTrainDataset`): one item per caption, 4 pairs
  1. (caption, its image)                              target 1 (match)
  2. (caption, a random other image)                   target 0
  3. (a random caption of a hard-negative image, GT)   target 0; the hard-negative image is
     `train_image_list[pool[r]]` for r uniform in 1..K-1 (column 0 = the image itself is
     skipped), `pool = train_hard_pool[row of the GT image]`; pool entries that are the GT
     image itself or not among the training images (e.g. held-out minival images) are never
     drawn; an image with no usable entry falls back to a random other image (counted, logged)
  4. (a random caption of a random other image, GT)    target 0
The randomness of item `index` in epoch `epoch` comes only from
`np.random.default_rng([seed, epoch, index])`, so samples do not depend on the number of
DataLoader workers or processes, workers never repeat each other, and a resumed run draws
exactly what an uninterrupted one would. (The authors used the global python/numpy RNGs inside
__getitem__, which every worker copies.) "Random other image" is uniform over the other images;
the authors picked the image of a random caption (uniform too when every image has 5 captions).
"""
from __future__ import annotations

import logging
import numbers
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tasks.common.task_dataset import TaskDataset
from tasks.common.paths import DataRoot
from tasks.common.readers import (TEXT_KEYS, DataFormatError, MissingFeaturesError,
                                  check_feature_dim, feature_topk, read_records,
                                  tokenize_texts)

log = logging.getLogger(__name__)

PAIRS_PER_CAPTION = 4
MINIVAL_SEED = 0          # the carved validation subset does not move with --seed
DEFAULT_VALID_IMAGES = 500
HELD_OUT_FILES = ("valid2014", "val2014")


# ------------------------------------------------------------------------------------ readers
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
        skipping it; docs/authors_code.md, "Retrieval fine-tuning")."""
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


# ------------------------------------------------------------------------------------ splits
@dataclass
class RetrievalSplit:
    """One split's images (JSON order) and flat captions, tokenized, with its feature store."""
    name: str
    annotations: FlickrAnnotations
    image_rows: np.ndarray            # [Ni] indices into the annotation file's images
    img_paths: list                   # [Ni] == TSV img_id, JSON order (matrix column order)
    image_ids: list                   # [Ni] int ids
    captions: list                    # [Nc] flat, image-major
    caption_to_image: np.ndarray      # [Nc] int64
    caption_start: np.ndarray         # [Ni + 1]: image i has captions [start[i], start[i+1])
    tokens: dict                      # name -> int64 [Nc, L]
    store: object                     # FeatureStore (or any mapping img_id -> (feats, boxes))
    feature_file: Optional[Path] = None
    tsv_order: np.ndarray = field(default=None)  # [Ni] split images sorted by TSV row

    @property
    def num_images(self) -> int:
        return len(self.img_paths)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def features(self, i: int):
        """(feats float32 [n, D], boxes float32 [n, 4]) of image i."""
        return self.store[self.img_paths[i]]

    def dense_features(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 [Ni, n, D], [Ni, n, 4] of every image, in column order."""
        rows = None
        if hasattr(self.store, "dense") and hasattr(self.store, "index_of") \
                and getattr(self.store, "num_boxes", None) is not None:
            rows = np.asarray([self.store.index_of(p) for p in self.img_paths], dtype=np.int64)
            feats, boxes = self.store.dense()
            return (np.asarray(feats[rows], dtype=np.float32),
                    np.asarray(boxes[rows], dtype=np.float32))
        pairs = [self.features(i) for i in range(self.num_images)]
        return (np.stack([np.asarray(f, np.float32) for f, _ in pairs]),
                np.stack([np.asarray(b, np.float32) for _, b in pairs]))


def carve_minival(num_images: int, valid_images: int) -> np.ndarray:
    """Sorted indices of the train images held out as `minival` (fixed seed)."""
    if valid_images <= 0:
        raise ValueError(f"--validImages must be positive, got {valid_images}")
    if valid_images >= num_images:
        raise ValueError(f"--validImages {valid_images}: the train file has only {num_images} "
                         f"images; at least one must stay for training")
    perm = np.random.default_rng(MINIVAL_SEED).permutation(num_images)
    return np.sort(perm[:valid_images])


def held_out_files(root: DataRoot) -> Optional[tuple[Path, Path]]:
    """(json, tsv) of a held-out Flickr30k annotation file (`flickr30k_valid2014.json` or
    `flickr30k_val2014.json`), or None."""
    for stem in HELD_OUT_FILES:
        for d in root.dirs("retrieval", "annotations"):
            js = d / f"flickr30k_{stem}.json"
            if js.is_file():
                tsv = d / f"flickr30k_{stem}.tsv"
                if not tsv.is_file():
                    raise FileNotFoundError(f"{js} exists but its features {tsv} do not")
                return js, tsv
    return None


def split_files(root: DataRoot, split: str) -> tuple[Path, Path]:
    """(annotation json, feature tsv) a split reads (minival reads the train files)."""
    if split in ("train", "minival"):
        return files_of(root, "train")
    if split in ("valid", "val"):
        found = held_out_files(root)
        if found is None:
            raise FileNotFoundError(
                f"split {split!r}: no held-out Flickr30k annotation file "
                f"(flickr30k_valid2014.json / flickr30k_val2014.json) in "
                f"{', '.join(str(d) for d in root.dirs('retrieval', 'annotations'))}. Use "
                f"--valid minival (a "
                f"validation subset carved from the train images, --validImages N), or "
                f"--valid test to validate on the test file as the authors did.")
        return found
    return files_of(root, split)


def files_of(root: DataRoot, split: str) -> tuple[Path, Path]:
    return root.path("retrieval", "annotations", split), root.path("retrieval", "features", split)


def build_split(name: str, annotations: FlickrAnnotations, image_rows, tokens_all: dict,
                store, feature_file=None, subset: bool = False) -> RetrievalSplit:
    """The split of `annotations` restricted to `image_rows` (JSON order kept). `tokens_all`
    holds the tokens of every caption of the file (flat, image-major). Images without features
    are an error, or dropped (logged) when `subset` (--tiny/--fast)."""
    image_rows = np.asarray(image_rows, dtype=np.int64)
    if image_rows.size == 0:
        raise DataFormatError(f"split {name!r} is empty: {annotations.path} holds no images")
    keep, missing = [], []
    for r in image_rows.tolist():
        (keep if annotations.img_paths[r] in store else missing).append(r)
    if missing and not subset:
        raise MissingFeaturesError(
            f"split {name!r}: {len(missing)} images of {annotations.path} have no features in "
            f"{feature_file or 'the feature store'} (e.g. {annotations.img_paths[missing[0]]!r}); "
            f"the TSV img_id must equal the annotation's img_path")
    if missing:
        log.info("split %s: dropped %d images whose features were not loaded", name,
                 len(missing))
    image_rows = np.asarray(keep, dtype=np.int64)
    if image_rows.size == 0:
        raise MissingFeaturesError(
            f"split {name!r} is empty: none of its {len(missing)} images has features in "
            f"{feature_file or 'the feature store'} (--tiny/--fast read only its first rows)")
    counts = np.asarray(annotations.caption_counts, dtype=np.int64)
    file_start = np.concatenate([[0], np.cumsum(counts)])
    cap_rows = np.concatenate([np.arange(file_start[r], file_start[r + 1]) for r in image_rows])
    n_per = counts[image_rows]
    caption_start = np.concatenate([[0], np.cumsum(n_per)]).astype(np.int64)
    c2i = np.repeat(np.arange(len(image_rows), dtype=np.int64), n_per)
    flat = [s for r in image_rows.tolist() for s in annotations.captions[r]]
    tokens = {k: np.ascontiguousarray(tokens_all[k][cap_rows]) for k in TEXT_KEYS}
    img_paths = [annotations.img_paths[r] for r in image_rows.tolist()]
    tsv_order = None
    if hasattr(store, "index_of"):
        rows = np.asarray([store.index_of(p) for p in img_paths], dtype=np.int64)
        tsv_order = np.argsort(rows, kind="stable")
    else:
        tsv_order = np.arange(len(img_paths))
    extra = len(store) - len(img_paths) if hasattr(store, "__len__") else 0
    if extra > 0 and name not in ("train", "minival"):
        log.info("split %s: the feature file has %d images that are not in %s (ignored)",
                 name, extra, annotations.path.name)
    return RetrievalSplit(name, annotations, image_rows, img_paths,
                          [annotations.image_ids[r] for r in image_rows.tolist()], flat, c2i,
                          caption_start, tokens, store, feature_file, tsv_order)


def tokenize_captions(tokenizer, annotations: FlickrAnnotations) -> dict:
    """Tokens of every caption of the file (flat, image-major), each int64 [Nc, L]."""
    return tokenize_texts(tokenizer, [s for caps in annotations.captions for s in caps])


class SplitLoader:
    """Builds (and caches) splits from a data root: each annotation file is read and tokenized
    once, each feature file opened once."""

    def __init__(self, root: DataRoot, tokenizer, valid_images: int = DEFAULT_VALID_IMAGES,
                 tiny: bool = False, fast: bool = False, cache_dir=None, fp16: bool = False,
                 hold_out_minival: bool = False, feat_dim: Optional[int] = None):
        self.root, self.tokenizer = root, tokenizer
        self.feat_dim = feat_dim  # the model's visual_feat_dim, checked against each store
        self.valid_images, self.tiny, self.fast = valid_images, tiny, fast
        self.cache_dir, self.fp16 = cache_dir, fp16
        self.hold_out_minival = hold_out_minival
        self._files: dict = {}
        self._splits: dict = {}

    @property
    def topk(self) -> Optional[int]:
        # every retrieval split is cut alike: train and minival share one feature file
        return feature_topk("train", self.tiny, self.fast, task="retrieval")

    def _file(self, json_path: Path, tsv_path: Path):
        key = (str(json_path), str(tsv_path))
        if key not in self._files:
            from tasks.common.features import open_feature_store
            ann = load_flickr_annotations(json_path)
            if ann.num_images == 0:
                raise DataFormatError(f"{json_path} holds no images: every retrieval split "
                                      f"needs at least one")
            tokens = tokenize_captions(self.tokenizer, ann)
            store = open_feature_store(tsv_path, cache_dir=self.cache_dir, fp16=self.fp16,
                                       topk=self.topk)
            check_feature_dim([store], self.feat_dim)
            self._files[key] = (ann, tokens, store)
        return self._files[key]

    def split(self, name: str) -> RetrievalSplit:
        if name not in self._splits:
            json_path, tsv_path = split_files(self.root, name)
            ann, tokens, store = self._file(json_path, tsv_path)
            rows = np.arange(ann.num_images)
            if name == "minival":
                rows = carve_minival(ann.num_images, self.valid_images)
            elif name == "train" and self.hold_out_minival:
                rows = np.setdiff1d(rows, carve_minival(ann.num_images, self.valid_images))
            split = build_split(name, ann, rows, tokens, store, tsv_path,
                                subset=self.topk is not None)
            log.info("split %s: %d images, %d captions (%s)", name, split.num_images,
                     split.num_captions, json_path)
            self._splits[name] = split
        return self._splits[name]

    def hard_negatives(self) -> HardNegatives:
        return load_hard_negatives(self.root.path("retrieval", "hard_negatives"))


# ------------------------------------------------------------------------------------ training
def hard_negative_table(split: RetrievalSplit, hard: HardNegatives,
                        check: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """For every image g of `split`: the usable hard negatives (split image indices) from
    pool columns 1..K-1 (column 0 skipped, as the authors), without g itself and without
    images outside the split. Returns (candidates [Ni, K-1] padded with -1, counts [Ni])."""
    if check:
        hard.check_images(split.image_ids)
    row_of = hard.index_of()
    pos_of = {int(img): i for i, img in enumerate(split.image_ids)}
    k = hard.pool_size - 1
    cand = np.full((split.num_images, k), -1, dtype=np.int64)
    counts = np.zeros(split.num_images, dtype=np.int64)
    images = hard.train_image_list
    for g, img in enumerate(split.image_ids):
        row = row_of.get(int(img))
        if row is None:
            continue
        picks = [pos_of.get(int(images[p]), -1) for p in hard.train_hard_pool[row, 1:]]
        picks = [p for p in picks if p >= 0 and p != g]
        cand[g, :len(picks)] = picks
        counts[g] = len(picks)
    return cand, counts


class RetrievalTrainDataset(TaskDataset):
    """One item per caption of `split`: the authors' 4 pairs (see the module docstring).

    Item: `index` int64, `caption_index` [4], `image_index` [4] int64, `input_ids`,
    `token_position`, `input_mask` [4, L] int64, `feats` [4, n, D] float32, `boxes` [4, n, 4]
    float32, `target` [4] int64 (1 = match). Call `set_epoch(e)` before each epoch's loader."""

    def __init__(self, split: RetrievalSplit, hard: Optional[HardNegatives], seed: int):
        if split.num_images < 2:
            raise ValueError("retrieval training needs at least 2 images")
        self.split, self.seed, self.epoch = split, int(seed), 0
        self.caption_to_image = split.caption_to_image
        self.caption_start = split.caption_start
        self.num_images = split.num_images
        if hard is not None:
            self.hard_cand, self.hard_count = hard_negative_table(split, hard)
        else:
            self.hard_cand = np.full((split.num_images, 1), -1, dtype=np.int64)
            self.hard_count = np.zeros(split.num_images, dtype=np.int64)
        self.no_hard_negative = int((self.hard_count == 0).sum())
        if self.no_hard_negative:
            log.warning("%d of %d training images have no usable hard negative in the pool; "
                        "a random other image stands in for them", self.no_hard_negative,
                        split.num_images)
        self.tokens = {k: torch.from_numpy(v) for k, v in split.tokens.items()}

    def __len__(self) -> int:
        return self.split.num_captions

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _other_image(self, rng, g: int) -> int:
        j = int(rng.integers(self.num_images - 1))
        return j + (j >= g)

    def _caption_of(self, rng, image: int) -> int:
        s, e = self.caption_start[image], self.caption_start[image + 1]
        return int(s + rng.integers(e - s))

    def sample(self, index: int, epoch: Optional[int] = None) -> tuple[list, list, list]:
        """(caption indices [4], image indices [4], targets [4]) of item `index`."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        g = int(self.caption_to_image[index])
        rand_img = self._other_image(rng, g)
        n_hard = int(self.hard_count[g])
        hard_img = (int(self.hard_cand[g, rng.integers(n_hard)]) if n_hard
                    else self._other_image(rng, g))
        hard_cap = self._caption_of(rng, hard_img)
        other_cap = self._caption_of(rng, self._other_image(rng, g))
        return [index, index, hard_cap, other_cap], [g, rand_img, g, g], [1, 0, 0, 0]

    def __getitem__(self, index: int) -> dict:
        caps, imgs, target = self.sample(index)
        cap_t = torch.tensor(caps, dtype=torch.int64)
        item = {"index": torch.tensor(index, dtype=torch.int64), "caption_index": cap_t,
                "image_index": torch.tensor(imgs, dtype=torch.int64),
                "target": torch.tensor(target, dtype=torch.int64)}
        for k, v in self.tokens.items():
            item[k] = v.index_select(0, cap_t)
        loaded = {}
        for i in imgs:
            if i not in loaded:
                f, b = self.split.features(i)
                loaded[i] = (torch.from_numpy(np.asarray(f, np.float32)),
                             torch.from_numpy(np.asarray(b, np.float32)))
        item["feats"] = torch.stack([loaded[i][0] for i in imgs])
        item["boxes"] = torch.stack([loaded[i][1] for i in imgs])
        return item


def check_split_disjoint(a: RetrievalSplit, b: RetrievalSplit) -> None:
    """Raise if two splits share images (e.g. training and validation)."""
    shared = set(a.img_paths) & set(b.img_paths)
    if shared:
        raise DataFormatError(f"splits {a.name!r} and {b.name!r} share {len(shared)} images "
                              f"(e.g. {sorted(shared)[0]!r})")
