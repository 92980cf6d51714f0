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


# Authors' tolerance: every dataset asserts normalised boxes lie in [0-1e-5, 1+1e-5]
# (np.testing.assert_array_less, i.e. strict comparisons).
BOX_TOLERANCE = 1e-5


def normalise_boxes(boxes: np.ndarray, img_h: int, img_w: int) -> np.ndarray:
    """Pixel (x1,y1,x2,y2) -> divided by (w,h,w,h) in float32, exactly the authors' way.

    ``boxes[:, (0,2)] /= img_w; boxes[:, (1,3)] /= img_h`` on a float32 array divides in
    float32 (IEEE, correctly rounded), which is bit-identical to this single division.
    """
    return np.asarray(boxes, dtype=np.float32) / np.array([img_w, img_h, img_w, img_h],
                                                          dtype=np.float32)


def boxes_in_range(normed: np.ndarray) -> bool:
    """The authors' check: assert_array_less(boxes, 1+1e-5) and assert_array_less(-boxes, 0+1e-5)."""
    return bool(np.all(normed < 1 + BOX_TOLERANCE) and np.all(-normed < 0 + BOX_TOLERANCE))


MAX_SHOWN = 60  # characters of a malformed img_id quoted in an error message


class TSVFormatError(ValueError):
    """A malformed TSV row; the message names the file, the line number and the img_id."""


def _int_field(value: str, name: str, fail) -> int:
    try:
        return int(value)  # the authors call int() on the csv string
    except ValueError:
        fail(f"{name} is not an integer: {value[:40]!r}")


def decode_row(line, source: str = "<string>", lineno: int = 0,
               check_boxes: bool = True) -> ImageFeatures:
    """Decode one TSV line (str or bytes, trailing newline allowed) into ``ImageFeatures``.

    Decodes the arrays with the authors' dtypes (``np.frombuffer(base64.b64decode(s), dtype)``)
    and validates the row: field count, integer img_h/img_w/num_boxes, base64, every array's
    length against num_boxes, finite features and boxes, no NUL bytes (a crash's tail), and
    (``check_boxes``) the authors' box-range check.
    Raises ``TSVFormatError`` (a ValueError) naming ``source``, ``lineno`` and the img_id.
    The returned arrays are read-only views on the decoded buffers.
    """
    if isinstance(line, str):
        line = line.encode("utf-8")
    line = line.rstrip(b"\r\n")
    fields = line.split(b"\t")
    img_id = fields[0].decode("utf-8", errors="replace") if fields else ""
    shown = img_id if len(img_id) <= MAX_SHOWN else img_id[:MAX_SHOWN] + "..."

    def fail(msg):
        raise TSVFormatError(f"{source}:{lineno}: img_id {shown!r}: {msg}")

    nuls = line.count(b"\x00")
    if nuls:
        # a run of NUL bytes is what a crash or a full disk leaves at the end of a file
        fail(f"the line holds NUL bytes ({nuls} of {len(line)} bytes; a file "
             f"truncated or padded by a crash?); re-extract or re-download the TSV")
    if len(fields) != len(FIELDNAMES):
        fail(f"expected {len(FIELDNAMES)} tab-separated fields ({', '.join(FIELDNAMES)}), "
             f"got {len(fields)}")
    row = dict(zip(FIELDNAMES, fields))
    img_h = _int_field(row["img_h"].decode("ascii", "replace"), "img_h", fail)
    img_w = _int_field(row["img_w"].decode("ascii", "replace"), "img_w", fail)
    n = _int_field(row["num_boxes"].decode("ascii", "replace"), "num_boxes", fail)
    if img_h <= 0 or img_w <= 0:
        fail(f"image size must be positive, got img_h={img_h} img_w={img_w}")
    if n <= 0:
        fail(f"num_boxes must be positive, got {n}")

    arrays = {}
    for name, dtype in ARRAY_DTYPES.items():
        try:
            raw = base64.b64decode(row[name])
        except (ValueError, TypeError) as e:  # binascii.Error is a ValueError
            fail(f"{name} is not valid base64 ({e})")
        itemsize = np.dtype(dtype).itemsize
        if len(raw) % itemsize:
            fail(f"{name} has {len(raw)} bytes, not a multiple of {np.dtype(dtype).name} "
                 f"size {itemsize}")
        arr = np.frombuffer(raw, dtype=dtype)
        if name == "boxes":
            if arr.size != n * 4:
                fail(f"boxes has {arr.size} values, expected num_boxes*4 = {n * 4}")
            arr = arr.reshape(n, 4)
        elif name == "features":
            if arr.size == 0 or arr.size % n:
                fail(f"features has {arr.size} values, not a positive multiple of "
                     f"num_boxes = {n}")
            arr = arr.reshape(n, -1)
        elif arr.size != n:
            fail(f"{name} has {arr.size} values, expected num_boxes = {n}")
        arrays[name] = arr
    for name in ("features", "boxes"):
        if not np.isfinite(arrays[name]).all():
            bad = int(np.argwhere(~np.isfinite(arrays[name]))[0][0])
            fail(f"{name} of box {bad} hold non-finite values (NaN or inf); a model trained "
                 f"on them would be NaN")
    item = ImageFeatures(img_id=img_id, img_h=img_h, img_w=img_w, **arrays)
    if check_boxes:
        normed = normalise_boxes(item.boxes, img_h, img_w)
        if not boxes_in_range(normed):
            bad = np.argwhere(~((normed < 1 + BOX_TOLERANCE) & (-normed < BOX_TOLERANCE)))[0]
            fail(f"box {int(bad[0])} = {item.boxes[bad[0]].tolist()} lies outside the "
                 f"{img_w}x{img_h} image (normalised {normed[bad[0]].tolist()}, allowed "
                 f"[0-{BOX_TOLERANCE}, 1+{BOX_TOLERANCE}])")
    return item
