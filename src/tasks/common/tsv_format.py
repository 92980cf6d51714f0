"""The LXMERT Faster R-CNN feature TSV format: one image per line, tab-separated, no header.

Columns (FIELDNAMES): img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf,
num_boxes, boxes, features. The array columns are base64 of raw little-endian buffers:
objects_id/attrs_id int64 (n,), objects_conf/attrs_conf float32 (n,), boxes float32 (n,4) in
pixel x1,y1,x2,y2, features float32 (n, D) (D = 2048 for the authors' features).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

FIELDNAMES = ["img_id", "img_h", "img_w", "objects_id", "objects_conf",
              "attrs_id", "attrs_conf", "num_boxes", "boxes", "features"]

# dtype of each base64 array column
ARRAY_DTYPES = {
    "objects_id": np.int64,
    "objects_conf": np.float32,
    "attrs_id": np.int64,
    "attrs_conf": np.float32,
    "boxes": np.float32,
    "features": np.float32,
}


@dataclass
class ImageFeatures:
    """One TSV row, decoded."""
    img_id: str
    img_h: int
    img_w: int
    objects_id: np.ndarray   # int64 (n,)
    objects_conf: np.ndarray  # float32 (n,)
    attrs_id: np.ndarray     # int64 (n,)
    attrs_conf: np.ndarray   # float32 (n,)
    boxes: np.ndarray        # float32 (n, 4), pixels x1,y1,x2,y2
    features: np.ndarray     # float32 (n, D)

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


def _b64(array: np.ndarray, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def encode_row(item: ImageFeatures) -> str:
    """One TSV line (without the newline) in the authors' format."""
    n = item.num_boxes
    for name in ("objects_id", "objects_conf", "attrs_id", "attrs_conf"):
        if getattr(item, name).shape != (n,):
            raise ValueError(f"img_id {item.img_id}: {name} has shape "
                             f"{getattr(item, name).shape}, expected ({n},)")
    if item.boxes.shape != (n, 4) or item.features.ndim != 2 or item.features.shape[0] != n:
        raise ValueError(f"img_id {item.img_id}: boxes {item.boxes.shape} / features "
                         f"{item.features.shape} do not match num_boxes {n}")
    if "\t" in item.img_id or "\n" in item.img_id:
        raise ValueError(f"img_id {item.img_id!r} contains a tab or newline")
    cols = [item.img_id, str(int(item.img_h)), str(int(item.img_w))]
    cols += [_b64(getattr(item, name), ARRAY_DTYPES[name])
             for name in ("objects_id", "objects_conf", "attrs_id", "attrs_conf")]
    cols += [str(n), _b64(item.boxes, np.float32), _b64(item.features, np.float32)]
    return "\t".join(cols)
