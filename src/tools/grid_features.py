"""Grid region features: no detector, no weights (the default of tools.extract_features).

Regions are the cells of a ``grid x grid`` partition of the image (36 boxes by default), given as
real pixel boxes ``x1,y1,x2,y2`` in the original image's coordinates (``x2 <= img_w``), row-major.

Default features ("handcrafted", no weights needed, fully deterministic): for each region a
descriptor computed from its pixels, concatenated with a whole-image (context) descriptor:

* region part: box position (8), mean/std RGB (6), a 4x4x4 joint RGB histogram (64), a
  nearest-named-colour histogram over a fixed palette of 19 colours (HTML 16 + brown, orange,
  pink) (19), a hue histogram (8 hues + achromatic) (9), a magnitude-weighted histogram of
  unsigned gradient orientations (colour Sobel, 8 bins) (8), mean gradient magnitude and edge
  density (2), foreground fraction, foreground mean colour and centroid (6), and the named-colour
  histogram of the foreground pixels (19).  The "foreground" is every pixel that differs from the
  image's background colour, estimated as the median colour of the image border.
* context part: the same statistics over the whole image (without the box), a finer 16-bin
  orientation histogram, shape descriptors of the foreground mask (area, bounding box, fill ratio
  of the bounding box, aspect, normalised central moments of order 2 and 3, perimeter-based
  compactness), the foreground mask on an 8x8 grid of the image, the foreground mask re-sampled
  inside its own bounding box on an 8x8 grid (a translation/scale-invariant shape code) and a
  4x4 colour thumbnail.

The raw descriptor (``raw_dim()``, 474 values for the default settings) is mapped to ``dim``
values by zero-padding when it fits (``--projection auto``/``pad``) or by a fixed-seed Gaussian
random projection (``--projection random``, or ``auto`` when ``dim`` is smaller).

Grid regions have no detector labels: ``objects_id`` and ``attrs_id`` are all-zero int64 arrays and
``objects_conf``/``attrs_conf`` are all 1.0 (the LXMERT loaders read but do not use them for the
fine-tuning tasks).

Optional: ``--backbone resnet50 --weights PATH`` uses a torchvision ResNet whose weights file the
user supplies (nothing is downloaded): the grid boxes are RoI-aligned on the last conv feature map
and averaged (2048 values for resnet50/101/152).  torchvision is imported only then.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tools.image_files import BadImageError, load_image

# A fixed palette of named colours (HTML 4 basic colours + brown, orange, pink), RGB in [0, 1].
PALETTE = {
    "black": (0, 0, 0), "silver": (192, 192, 192), "gray": (128, 128, 128),
    "white": (255, 255, 255), "maroon": (128, 0, 0), "red": (255, 0, 0),
    "purple": (128, 0, 128), "fuchsia": (255, 0, 255), "green": (0, 128, 0),
    "lime": (0, 255, 0), "olive": (128, 128, 0), "yellow": (255, 255, 0),
    "navy": (0, 0, 128), "blue": (0, 0, 255), "teal": (0, 128, 128), "aqua": (0, 255, 255),
    "brown": (165, 42, 42), "orange": (255, 165, 0), "pink": (255, 192, 203),
}
_PALETTE = np.asarray(list(PALETTE.values()), dtype=np.float32) / 255.0
N_NAMES = len(PALETTE)
N_RGB = 64          # 4 x 4 x 4 joint RGB bins
N_HUE = 9           # 8 hue bins + achromatic
N_ORI_FINE = 16     # global orientation bins (unsigned, 0..pi)
N_ORI = 8           # region orientation bins (pairs of the fine bins)
MASK_GRID = 8
THUMB_GRID = 4
PROJECTION_SEED = 20210801

def region_raw_dim() -> int:
    return 8 + 6 + N_RGB + N_NAMES + N_HUE + N_ORI + 2 + 6 + N_NAMES


def context_raw_dim() -> int:
    stats = region_raw_dim() - 8 - N_ORI      # whole-image stats use the fine orientations
    shape = 1 + 4 + 1 + 1 + 7 + 2
    return stats + N_ORI_FINE + shape + MASK_GRID ** 2 + MASK_GRID ** 2 + 3 * THUMB_GRID ** 2


def raw_dim() -> int:
    """Length of the handcrafted descriptor before padding/projection."""
    return region_raw_dim() + context_raw_dim()


def grid_edges(size: int, grid: int) -> np.ndarray:
    """Integer cell edges 0 = e0 < e1 < ... < e_grid = size (cells as even as possible)."""
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    return np.round(np.linspace(0, size, grid + 1)).astype(np.int64)


def grid_boxes(img_h: int, img_w: int, grid: int) -> np.ndarray:
    """float32 [grid*grid, 4] pixel boxes x1,y1,x2,y2, row-major, tiling the whole image."""
    xs = grid_edges(img_w, grid).astype(np.float32)
    ys = grid_edges(img_h, grid).astype(np.float32)
    boxes = np.zeros((grid, grid, 4), dtype=np.float32)
    boxes[..., 0] = xs[None, :-1]
    boxes[..., 1] = ys[:-1, None]
    boxes[..., 2] = xs[None, 1:]
    boxes[..., 3] = ys[1:, None]
    return boxes.reshape(-1, 4)


def _cell_map(h: int, w: int, grid: int) -> np.ndarray:
    """int64 [h*w]: the grid cell (row-major) of each pixel."""
    ry = np.searchsorted(grid_edges(h, grid), np.arange(h), side="right") - 1
    rx = np.searchsorted(grid_edges(w, grid), np.arange(w), side="right") - 1
    return (ry[:, None] * grid + rx[None, :]).reshape(-1)


def _region_sums(values: np.ndarray, cells: np.ndarray, n_cells: int) -> np.ndarray:
    """values float [B, P] -> per-region sums float64 [B, n_cells]."""
    b = values.shape[0]
    idx = (np.arange(b)[:, None] * n_cells + cells[None, :]).reshape(-1)
    return np.bincount(idx, weights=values.reshape(-1).astype(np.float64),
                       minlength=b * n_cells).reshape(b, n_cells)


def _region_hist(bins: np.ndarray, weights: np.ndarray | None, cells: np.ndarray,
                 n_cells: int, n_bins: int) -> np.ndarray:
    """bins int [B, P] in [0, n_bins) -> weighted histograms float64 [B, n_cells, n_bins]."""
    b = bins.shape[0]
    idx = ((np.arange(b)[:, None] * n_cells + cells[None, :]) * n_bins + bins).reshape(-1)
    w = None if weights is None else weights.reshape(-1).astype(np.float64)
    return np.bincount(idx, weights=w, minlength=b * n_cells * n_bins).reshape(b, n_cells, n_bins)


def _sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [B, H, W, C] -> (gx, gy), Sobel with edge replication."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]
          - p[:, :-2, :-2] - 2 * p[:, 1:-1, :-2] - p[:, 2:, :-2]) / 4.0
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]
          - p[:, :-2, :-2] - 2 * p[:, :-2, 1:-1] - p[:, :-2, 2:]) / 4.0
    return gx, gy


class _PixelData:
    """Per-pixel quantities of a batch of same-sized images (flattened to [B, P])."""

    def __init__(self, x: np.ndarray):
        b, h, w, _ = x.shape
        self.shape = (b, h, w)
        flat = x.reshape(b, h * w, 3)
        # background colour = per-channel median of the border pixels
        border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
        bg = np.median(border, axis=1)                                  # [B, 3]
        dist = np.abs(x - bg[:, None, None, :]).max(axis=-1)            # [B, H, W]
        fg = np.clip((dist - 0.05) / 0.2, 0.0, 1.0).astype(np.float32)
        self.fg_img = fg
        # colour gradient: per pixel, the channel with the largest Sobel magnitude
        gx, gy = _sobel(x)
        mag_c = gx * gx + gy * gy
        best = mag_c.argmax(axis=-1)[..., None]
        gxb = np.take_along_axis(gx, best, -1)[..., 0]
        gyb = np.take_along_axis(gy, best, -1)[..., 0]
        mag = np.sqrt(np.take_along_axis(mag_c, best, -1)[..., 0])
        theta = np.mod(np.arctan2(gyb, gxb), np.pi)                     # unsigned, [0, pi)
        pos = theta / np.pi * N_ORI_FINE - 0.5                           # soft binning, circular
        lo = np.floor(pos)
        frac = (pos - lo).astype(np.float32)
        self.ori_lo = np.mod(lo, N_ORI_FINE).astype(np.int64).reshape(b, -1)
        self.ori_hi = np.mod(lo + 1, N_ORI_FINE).astype(np.int64).reshape(b, -1)
        mag_f = mag.reshape(b, -1).astype(np.float32)
        self.ori_w_lo = mag_f * (1.0 - frac.reshape(b, -1))
        self.ori_w_hi = mag_f * frac.reshape(b, -1)
        # quantised colours
        q = np.minimum((flat * 4).astype(np.int64), 3)
        self.rgb_bin = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
        # nearest palette colour: argmin |x - p|^2 = argmin (|p|^2 - 2 x.p)
        d2 = (_PALETTE * _PALETTE).sum(-1) - 2.0 * (flat @ _PALETTE.T)
        self.name_bin = d2.argmin(-1)
        mx = flat.max(-1)
        mn = flat.min(-1)
        chroma = mx - mn
        sat = np.where(mx > 0, chroma / np.maximum(mx, 1e-6), 0.0)
        r, g, bl = flat[..., 0], flat[..., 1], flat[..., 2]
        c = np.maximum(chroma, 1e-6)
        hue = np.where(mx == r, np.mod((g - bl) / c, 6.0),
                       np.where(mx == g, (bl - r) / c + 2.0, (r - g) / c + 4.0)) / 6.0
        hue_bin = np.minimum((hue * 8).astype(np.int64), 7)
        self.hue_bin = np.where((sat > 0.25) & (mx > 0.2), hue_bin, 8)
        # continuous channels
        ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        fgf = fg.reshape(b, -1)
        self.cont = {
            "r": r, "g": g, "b": bl, "r2": r * r, "g2": g * g, "b2": bl * bl,
            "mag": mag_f, "edge": (mag_f > 0.1).astype(np.float32), "fg": fgf,
            "fg_r": fgf * r, "fg_g": fgf * g, "fg_b": fgf * bl,
            "fg_x": fgf * xs.reshape(1, -1).astype(np.float32),
            "fg_y": fgf * ys.reshape(1, -1).astype(np.float32),
        }
        self.fg = fgf

    def stats(self, cells: np.ndarray, n_cells: int, n_ori: int) -> np.ndarray:
        """Region statistics float64 [B, n_cells, S] (S = region_raw_dim() - 8 - 8 + n_ori)."""
        counts = np.bincount(cells, minlength=n_cells).astype(np.float64)   # pixels per cell
        cont = {k: _region_sums(v, cells, n_cells) / counts for k, v in self.cont.items()}
        mean = np.stack([cont["r"], cont["g"], cont["b"]], -1)
        sq = np.stack([cont["r2"], cont["g2"], cont["b2"]], -1)
        std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
        rgb_h = _region_hist(self.rgb_bin, None, cells, n_cells, N_RGB) / counts[:, None]
        name_h = _region_hist(self.name_bin, None, cells, n_cells, N_NAMES) / counts[:, None]
        hue_h = _region_hist(self.hue_bin, None, cells, n_cells, N_HUE) / counts[:, None]
        ori = (_region_hist(self.ori_lo, self.ori_w_lo, cells, n_cells, N_ORI_FINE)
               + _region_hist(self.ori_hi, self.ori_w_hi, cells, n_cells, N_ORI_FINE))
        if n_ori != N_ORI_FINE:
            ori = ori.reshape(*ori.shape[:2], n_ori, N_ORI_FINE // n_ori).sum(-1)
        ori = ori / np.maximum(ori.sum(-1, keepdims=True), 1e-6)
        fg = cont["fg"]
        fg_den = np.maximum(fg, 1e-6)
        fg_col = np.stack([cont["fg_r"], cont["fg_g"], cont["fg_b"]], -1) / fg_den[..., None]
        fg_xy = np.stack([cont["fg_x"], cont["fg_y"]], -1) / fg_den[..., None]
        fg_names = _region_hist(self.name_bin, self.fg, cells, n_cells, N_NAMES)
        fg_names = fg_names / np.maximum(fg_names.sum(-1, keepdims=True), 1e-6)
        return np.concatenate([
            mean, std, rgb_h, name_h, hue_h, ori,
            cont["mag"][..., None], cont["edge"][..., None],
            fg[..., None], fg_col, fg_xy, fg_names,
        ], axis=-1)


def _shape_descriptors(fg: np.ndarray) -> np.ndarray:
    """fg float32 [B, H, W] (soft mask) -> float64 [B, 16 + 64] shape descriptors."""
    b, h, w = fg.shape
    hard = fg > 0.5
    area = fg.reshape(b, -1).mean(-1)
    rows = hard.any(axis=2)
    cols = hard.any(axis=1)
    has = rows.any(axis=1)
    y1 = np.where(has, rows.argmax(1), 0)
    y2 = np.where(has, h - rows[:, ::-1].argmax(1), h)
    x1 = np.where(has, cols.argmax(1), 0)
    x2 = np.where(has, w - cols[:, ::-1].argmax(1), w)
    bw = (x2 - x1).astype(np.float64)
    bh = (y2 - y1).astype(np.float64)
    n_hard = hard.reshape(b, -1).sum(-1).astype(np.float64)
    fill = np.where(has, n_hard / np.maximum(bw * bh, 1.0), 0.0)
    aspect = np.where(has, np.log(np.maximum(bw, 1.0) / np.maximum(bh, 1.0)), 0.0)
    # normalised central moments eta_pq of the soft mask (pixel units)
    yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    m00 = fg.reshape(b, -1).sum(-1).astype(np.float64)
    m00s = np.maximum(m00, 1e-6)
    cx = (fg * xx).reshape(b, -1).sum(-1) / m00s
    cy = (fg * yy).reshape(b, -1).sum(-1) / m00s
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    etas = []
    for p, q in ((2, 0), (0, 2), (1, 1), (3, 0), (0, 3), (2, 1), (1, 2)):
        mu = (fg * dx ** p * dy ** q).reshape(b, -1).sum(-1)
        etas.append(np.where(m00 > 1e-3, mu / m00s ** (1 + (p + q) / 2.0), 0.0))
    etas = np.stack(etas, -1) * np.array([5, 5, 5, 20, 20, 20, 20])
    # perimeter (4-neighbour boundary pixels of the hard mask) -> compactness
    pad = np.pad(hard, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    inner = pad[:, :-2, 1:-1] & pad[:, 2:, 1:-1] & pad[:, 1:-1, :-2] & pad[:, 1:-1, 2:]
    perim = (hard & ~inner).reshape(b, -1).sum(-1).astype(np.float64)
    compact = np.where(has, perim ** 2 / (4 * np.pi * np.maximum(n_hard, 1.0)), 0.0) / 4.0
    perim_ratio = np.where(has, perim / np.sqrt(np.maximum(n_hard, 1.0)), 0.0) / 8.0
    # the mask re-sampled inside its own bounding box (4x4 samples per cell, averaged)
    k = MASK_GRID * 4
    t = (np.arange(k) + 0.5) / k
    sy = np.clip((y1[:, None] + t[None] * bh[:, None]).astype(np.int64), 0, h - 1)
    sx = np.clip((x1[:, None] + t[None] * bw[:, None]).astype(np.int64), 0, w - 1)
    crop = fg[np.arange(b)[:, None, None], sy[:, :, None], sx[:, None, :]]
    crop = crop.reshape(b, MASK_GRID, 4, MASK_GRID, 4).mean((2, 4)).reshape(b, -1)
    crop = crop * has[:, None]
    scalars = np.stack([area, x1 / w, y1 / h, x2 / w, y2 / h, fill, aspect,
                        compact, perim_ratio], -1)
    return np.concatenate([scalars[:, :7], etas, scalars[:, 7:], crop], -1)


def describe_batch(images: np.ndarray, grid: int = 6) -> np.ndarray:
    """Handcrafted raw descriptors of same-sized images.

    images: uint8 [B, H, W, 3] -> float32 [B, grid*grid, raw_dim()] (region part, then context).
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected [B, H, W, 3] images, got {images.shape}")
    b, h, w, _ = images.shape
    if h < grid or w < grid:
        raise ValueError(f"image {w}x{h} is smaller than the {grid}x{grid} grid")
    x = images.astype(np.float32) / 255.0
    pix = _PixelData(x)
    n = grid * grid
    region = pix.stats(_cell_map(h, w, grid), n, N_ORI)                     # [B, n, S]
    whole = pix.stats(np.zeros(h * w, dtype=np.int64), 1, N_ORI_FINE)[:, 0]  # [B, S']
    fg_grid = _region_sums(pix.fg, _cell_map(h, w, MASK_GRID), MASK_GRID ** 2)
    fg_grid /= np.bincount(_cell_map(h, w, MASK_GRID), minlength=MASK_GRID ** 2)
    tcells = _cell_map(h, w, THUMB_GRID)
    tcount = np.bincount(tcells, minlength=THUMB_GRID ** 2)
    thumb = np.concatenate([_region_sums(pix.cont[c], tcells, THUMB_GRID ** 2) / tcount
                            for c in ("r", "g", "b")], -1)
    context = np.concatenate([whole, _shape_descriptors(pix.fg_img), fg_grid, thumb], -1)
    boxes = grid_boxes(h, w, grid)
    pos = np.concatenate([boxes / np.array([w, h, w, h], dtype=np.float32),
                          (boxes[:, :2] + boxes[:, 2:]) / 2 / np.array([w, h], np.float32),
                          (boxes[:, 2:] - boxes[:, :2]) / np.array([w, h], np.float32)], -1)
    out = np.concatenate([np.broadcast_to(pos, (b, n, 8)), region,
                          np.broadcast_to(context[:, None], (b, n, context.shape[-1]))], -1)
    assert out.shape[-1] == raw_dim(), (out.shape, raw_dim())
    return out.astype(np.float32)


def projection_matrix(in_dim: int, out_dim: int, seed: int = PROJECTION_SEED) -> np.ndarray:
    """Fixed-seed Gaussian random projection float32 [in_dim, out_dim] (norm-preserving)."""
    rng = np.random.RandomState(seed)
    return (rng.standard_normal((in_dim, out_dim)) / np.sqrt(out_dim)).astype(np.float32)


class FeatureMapper:
    """Maps raw descriptors to ``dim`` values: zero-padding or a fixed random projection."""

    def __init__(self, in_dim: int, dim: int, projection: str = "auto"):
        if projection not in ("auto", "pad", "random"):
            raise ValueError(f"projection must be auto, pad or random, got {projection!r}")
        if projection == "auto":
            projection = "pad" if in_dim <= dim else "random"
        if projection == "pad" and in_dim > dim:
            raise ValueError(f"cannot zero-pad {in_dim} raw values into dim={dim}; "
                             f"use --projection random or a larger --dim")
        self.in_dim, self.dim, self.mode = in_dim, dim, projection
        self.matrix = projection_matrix(in_dim, dim) if projection == "random" else None

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.mode == "pad":
            out = np.zeros(raw.shape[:-1] + (self.dim,), dtype=np.float32)
            out[..., :self.in_dim] = raw
            return out
        # float64 row-by-row products: results do not depend on batch composition
        flat = raw.reshape(-1, self.in_dim).astype(np.float64)
        out = flat @ self.matrix.astype(np.float64)
        return out.astype(np.float32).reshape(raw.shape[:-1] + (self.dim,))


# ----------------------------------------------------------------------------- extractors

class HandcraftedExtractor:
    """`standardize`: optional (mean, std) of the raw descriptor (see `fit_standardizer`).
    Standardised inputs put the few colour dimensions on the same footing as the many
    geometry ones, which a model trained from scratch then picks up much faster."""

    def __init__(self, grid: int = 6, dim: int = 2048, projection: str = "auto",
                 standardize: tuple[np.ndarray, np.ndarray] | None = None):
        self.grid = grid
        self.mapper = FeatureMapper(raw_dim(), dim, projection)
        self.standardize = standardize

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Same-sized uint8 images -> list of float32 [grid*grid, dim]."""
        raw = describe_batch(np.stack(images), self.grid)
        if self.standardize is not None:
            mean, std = self.standardize
            raw = ((raw - mean) / std).astype(np.float32)
        return list(self.mapper(raw))


def fit_standardizer(image_paths: Sequence[str], grid: int = 6, max_side: int | None = 256,
                     sample: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of the raw descriptor over (the first `sample` of) the given
    images; constant dimensions get std 1 so they stay 0 after centring."""
    raws = []
    for path in list(image_paths)[:sample]:
        try:
            arr, _, _ = load_image(path, max_side, grid)
        except BadImageError:
            continue  # reported (skipped or stopped on) by the extraction itself
        raws.append(describe_batch(arr[None], grid)[0])
    if not raws:
        raise BadImageError(f"none of the first {sample} images could be read")
    flat = np.concatenate(raws).astype(np.float64)
    mean, std = flat.mean(0), flat.std(0)
    std[std < 1e-6] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


class BackboneExtractor:
    """Grid boxes RoI-aligned on a torchvision ResNet's last feature map (user-supplied weights)."""

    def __init__(self, name: str, weights: str, grid: int = 6, dim: int = 2048,
                 projection: str = "auto", size: int = 448, device: str = "cpu"):
        try:
            import torch
            import torchvision
            from torchvision.ops import roi_align
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                f"--backbone {name} needs torchvision, which is not installed "
                f"(pip install torchvision matching your torch); the default handcrafted "
                f"features need nothing extra") from e
        if not weights or not os.path.isfile(weights):
            raise FileNotFoundError(f"--backbone {name} needs --weights PATH to a local "
                                    f"state-dict file (nothing is downloaded); got {weights!r}")
        if not hasattr(torchvision.models, name):
            raise ValueError(f"unknown torchvision model {name!r}")
        model = getattr(torchvision.models, name)(weights=None)
        state = torch.load(weights, map_location="cpu")
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
        if not hasattr(model, "fc"):
            raise ValueError(f"--backbone {name}: only ResNet-style models (with .fc) are supported")
        channels = model.fc.in_features
        self.body = torch.nn.Sequential(*list(model.children())[:-2]).eval().to(device)
        self.torch, self.roi_align = torch, roi_align
        self.grid, self.size, self.device = grid, size, device
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        self.mapper = FeatureMapper(channels, dim, projection)

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        arr = np.stack(images)
        b, h, w, _ = arr.shape
        s = self.size / min(h, w)
        nh, nw = max(32, round(h * s)), max(32, round(w * s))
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear",
                                            align_corners=False)
        x = ((x - self.mean) / self.std).to(self.device)
        boxes = torch.from_numpy(grid_boxes(h, w, self.grid))
        scale = torch.tensor([nw / w, nh / h, nw / w, nh / h])
        rois = [(boxes * scale).to(self.device)] * b
        with torch.no_grad():
            fmap = self.body(x)
            pooled = self.roi_align(fmap, rois, output_size=(2, 2),
                                    spatial_scale=fmap.shape[-1] / nw, sampling_ratio=2,
                                    aligned=True).mean((2, 3))
        feats = pooled.cpu().numpy().reshape(b, self.grid * self.grid, -1)
        return list(self.mapper(feats))


