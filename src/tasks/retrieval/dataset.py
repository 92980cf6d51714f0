"""Flickr30k retrieval data: evaluation splits (captions x images) and the 4-pair training set.

Splits (`load_split`):
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

Training (`RetrievalTrainDataset`, spec §3.4): one item per caption, 4 pairs
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tasks.common.paths import DataRoot
from tasks.common.qa_data import DataFormatError, MissingFeaturesError, check_feature_dim
from tasks.common.task_dataset import TaskDataset
from tasks.retrieval.data import (FlickrAnnotations, HardNegatives, load_flickr_annotations,
                                  load_hard_negatives)

log = logging.getLogger("lxrt")

TOKEN_KEYS = ("input_ids", "token_position", "input_mask")
PAIRS_PER_CAPTION = 4
MINIVAL_SEED = 0          # the carved validation subset does not move with --seed
DEFAULT_VALID_IMAGES = 500
TINY_IMAGES = 512
FAST_IMAGES = 5000
HELD_OUT_FILES = ("valid2014", "val2014")


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
        for d in root._flickr_dirs():
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
        return root.flickr_annotations("train"), root.flickr_features("train")
    if split in ("valid", "val"):
        found = held_out_files(root)
        if found is None:
            raise FileNotFoundError(
                f"split {split!r}: no held-out Flickr30k annotation file "
                f"(flickr30k_valid2014.json / flickr30k_val2014.json) in "
                f"{', '.join(str(d) for d in root._flickr_dirs())}. Use --valid minival (a "
                f"validation subset carved from the train images, --validImages N), or "
                f"--valid test to validate on the test file as the authors did.")
        return found
    return root.flickr_annotations(split), root.flickr_features(split)


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
    tokens = {k: np.ascontiguousarray(tokens_all[k][cap_rows]) for k in TOKEN_KEYS}
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
    batch = tokenizer.encode_batch([s for caps in annotations.captions for s in caps])
    return {k: np.ascontiguousarray(np.asarray(getattr(batch, k)), dtype=np.int64)
            for k in TOKEN_KEYS}


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
        return TINY_IMAGES if self.tiny else FAST_IMAGES if self.fast else None

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
        return load_hard_negatives(self.root.hard_negatives())


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
