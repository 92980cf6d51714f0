"""What a prediction looked at: cross-modality attention read from the model and drawn.

`read_attention` runs the model once more with `output_attentions=True` (the eager attention
path; the normal predictions stay on SDPA) and takes, from one cross-modality layer:

* text -> regions: the attention of the text [CLS] (or of a chosen word) over the visual
  stream, averaged over heads unless one head is asked for. The visual stream starts with the
  learned visual [CLS]; its share is reported, and the real regions' weights are renormalised
  to sum to 1, which is what the picture shades.
* regions -> text: the attention of the visual [CLS] over the question's word pieces.

`draw_attention` shades the image's regions (grid cells or detector boxes; overlapping boxes
add up) and the word pieces beside it, with Pillow; the top detector boxes carry their object
names. Without an image file the boxes are drawn on a blank canvas of the image's size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

PANEL = 384        # the image panel's longer side, pixels
TEXT_WIDTH = 240   # the word-piece panel
CAPTION = 84       # caption lines under the panels
ROW = 22           # one word piece per row


@dataclass
class AttentionMaps:
    sentence: str
    tokens: list                  # word pieces, [CLS] ... [SEP]
    query: str                    # the token whose attention over regions is shown
    layer: int                    # index among the cross-modality layers
    head: Optional[int]           # None: mean over heads
    region_weights: np.ndarray    # [O], sums to 1 (visual [CLS] left out, renormalised)
    visual_cls_share: float       # the visual [CLS]'s share before renormalising
    token_weights: np.ndarray     # [len(tokens)]: visual [CLS] -> word pieces, sums to 1
    prediction: str = ""
    extra: dict = field(default_factory=dict)


def _pick(maps: torch.Tensor, head: Optional[int]) -> torch.Tensor:
    """[heads, Lq, Lk] -> [Lq, Lk]: one head or the mean over heads."""
    if head is None:
        return maps.mean(0)
    if not -maps.shape[0] <= head < maps.shape[0]:
        raise ValueError(f"--head {head}: the model has {maps.shape[0]} heads "
                         f"(0..{maps.shape[0] - 1})")
    return maps[head]


def query_index(tokens: list, word: Optional[str]) -> int:
    """Position of `word` among the word pieces (the text [CLS] when None)."""
    if word is None:
        return 0
    wanted = word.lower()
    for i, token in enumerate(tokens):
        if token.lower() == wanted:
            return i
    raise ValueError(f"--word {word!r} is not one of the question's word pieces {tokens}")


@torch.no_grad()
def read_attention(predictor, image, sentence: str, layer: int = -1,
                   head: Optional[int] = None, word: Optional[str] = None) -> AttentionMaps:
    text = predictor.encode([sentence])
    tokens = text["tokens"][0]
    feats, boxes = predictor._visual([image])
    bert = predictor.model.lxrt_encoder.bert
    out = bert(text["input_ids"], text["token_position"], text["input_mask"], feats, boxes,
               output_attentions=True)
    cross = [a for a in out.attentions if "lang_cross" in a]
    if not cross:
        raise ValueError("the model has no cross-modality layers to read attention from")
    if not -len(cross) <= layer < len(cross):
        raise ValueError(f"--layer {layer}: the model has {len(cross)} cross-modality layers "
                         f"(0..{len(cross) - 1}, or -1 for the last)")
    index = query_index(tokens, word)
    lang_to_visn = _pick(cross[layer]["lang_cross"][0].float(), head)[index]   # [1 + O]
    visn_to_lang = _pick(cross[layer]["visn_cross"][0].float(), head)[0]       # [L]
    regions = lang_to_visn[1:]
    token_weights = visn_to_lang[:len(tokens)]
    return AttentionMaps(
        sentence=sentence, tokens=tokens, query=tokens[index], layer=layer % len(cross),
        head=head, region_weights=(regions / regions.sum()).cpu().numpy(),
        visual_cls_share=float(lang_to_visn[0]),
        token_weights=(token_weights / token_weights.sum()).cpu().numpy())


# ---- drawing ---------------------------------------------------------------------------------

def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed bitmap font
        return ImageFont.load_default()


def _heat_colour(value: float) -> tuple:
    """0 -> pale yellow, 1 -> deep red (a small fixed ramp, no colour-map dependency)."""
    v = float(np.clip(value, 0.0, 1.0))
    return (255, int(235 - 200 * v), int(160 - 160 * v))


def _image_panel(image, maps: AttentionMaps) -> Image.Image:
    """The picture (or a blank canvas of its size) with regions shaded by their weight."""
    if image.path:   # decoded as the features were: upright, RGB
        from tools.image_files import load_rgb
        base = Image.fromarray(load_rgb(image.path, max_pixels=None))
    else:
        base = Image.new("RGB", (image.img_w, image.img_h), (235, 235, 235))
    scale = PANEL / max(base.size)
    size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
    base = base.resize(size, Image.NEAREST if scale >= 1 else Image.BILINEAR)
    heat = np.zeros((size[1], size[0]), np.float32)
    boxes = image.pixel_boxes * scale
    for (x1, y1, x2, y2), w in zip(boxes, maps.region_weights):
        heat[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] += w
    heat /= max(float(heat.max()), 1e-12)
    # dim what was not looked at, tint what was
    shade = Image.fromarray((255 * (0.12 + 0.88 * heat)).astype(np.uint8), "L")
    dark = Image.composite(base, Image.new("RGB", size, (0, 0, 0)), shade)
    draw = ImageDraw.Draw(dark)
    top = np.argsort(-maps.region_weights)[:3]
    for rank, k in enumerate(top):
        draw.rectangle([float(v) for v in boxes[k]], outline=(255, 40, 40),
                       width=3 if rank == 0 else 1)
    if getattr(image, "labels", None):   # detector regions: name the top boxes
        _label_boxes(draw, [(f"{rank + 1}. {image.labels[k]}", boxes[k])
                            for rank, k in enumerate(top)])
    if not image.path:  # a canvas: show every box's outline
        for box in boxes:
            draw.rectangle([float(v) for v in box], outline=(120, 120, 120))
    panel = Image.new("RGB", (PANEL, PANEL), (255, 255, 255))
    panel.paste(dark, ((PANEL - size[0]) // 2, (PANEL - size[1]) // 2))
    return panel


def _label_boxes(draw: ImageDraw.ImageDraw, labelled: list) -> None:
    """Each text at its box's top-left corner, moved down past the labels already placed
    (the top boxes often share a corner)."""
    font, placed = _font(12), []
    for text, box in labelled:
        x, y = float(box[0]) + 2, float(box[1]) + 2
        rect = draw.textbbox((x, y), text, font=font)
        while any(rect[0] < p[2] and p[0] < rect[2] and rect[1] < p[3] and p[1] < rect[3]
                  for p in placed):
            y += rect[3] - rect[1] + 2
            rect = draw.textbbox((x, y), text, font=font)
        placed.append(rect)
        draw.rectangle(rect, fill=(255, 40, 40))
        draw.text((x, y), text, fill=(255, 255, 255), font=font)


def _token_panel(maps: AttentionMaps) -> Image.Image:
    panel = Image.new("RGB", (TEXT_WIDTH, PANEL), (255, 255, 255))
    draw, font = ImageDraw.Draw(panel), _font(14)
    draw.text((6, 4), "visual [CLS] -> words", fill=(0, 0, 0), font=font)
    peak = max(float(maps.token_weights.max()), 1e-12)
    shown = min(len(maps.tokens), (PANEL - 30) // ROW)
    for i in range(shown):
        y = 26 + i * ROW
        w = float(maps.token_weights[i])
        draw.rectangle([6, y, TEXT_WIDTH - 6, y + ROW - 3], fill=_heat_colour(w / peak))
        draw.text((10, y + 2), f"{maps.tokens[i]}", fill=(0, 0, 0), font=font)
        draw.text((TEXT_WIDTH - 60, y + 2), f"{w:.2f}", fill=(0, 0, 0), font=font)
    return panel


def draw_attention(image, maps: AttentionMaps, path=None) -> Image.Image:
    """Write the picture to `path` (PNG; None: do not write) and return it: (PANEL +
    TEXT_WIDTH) x (PANEL + CAPTION) pixels."""
    out = Image.new("RGB", (PANEL + TEXT_WIDTH, PANEL + CAPTION), (255, 255, 255))
    out.paste(_image_panel(image, maps), (0, 0))
    out.paste(_token_panel(maps), (PANEL, 0))
    draw, font = ImageDraw.Draw(out), _font(13)
    head = "mean over heads" if maps.head is None else f"head {maps.head}"
    lines = [f"Q: {maps.sentence}" + (f"  ->  {maps.prediction}" if maps.prediction else ""),
             f"{maps.query} -> regions, cross layer {maps.layer}, {head}; visual [CLS] took "
             f"{maps.visual_cls_share:.1%} (regions renormalised to 1)",
             f"brightness = weight / strongest region ({maps.region_weights.max():.1%}; uniform "
             f"{1 / len(maps.region_weights):.1%}); red boxes: the top 3",
             f"image {image.img_id} ({image.img_w}x{image.img_h}, "
             f"{len(maps.region_weights)} regions)"]
    for i, line in enumerate(lines):
        draw.text((6, PANEL + 4 + 19 * i), line, fill=(0, 0, 0), font=font)
    if path is not None:
        out.save(path)
    return out
