"""Check a released detector weights file strictly and write it as safetensors.

    python -m tools.convert_detector_weights faster_rcnn_from_caffe_attr.pkl OUT.safetensors
    python -m tools.convert_detector_weights pytorch_model.bin OUT.safetensors

Reads py-bottom-up-attention's `.pkl` (with an unpickler that admits only a dict of numpy
arrays) or the Hugging Face demo's `pytorch_model.bin` (`weights_only=True`), checks every key
and shape against the detector (butd.weights), and writes the tensors with the detector's
settings in the file's metadata. The output loads without any pickle:
`tools.extract_features ... --detector butd --weights data/butd_vg.safetensors`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from butd import DetectorConfig, WeightsError, convert_weights


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.convert_detector_weights",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="faster_rcnn_from_caffe[_attr].pkl or pytorch_model.bin")
    ap.add_argument("target", help="the .safetensors file to write")
    ap.add_argument("--config", default=None,
                    help="a JSON file of detector settings (default: the Visual Genome model)")
    args = ap.parse_args(argv)
    if not args.target.endswith(".safetensors"):
        ap.error(f"target {args.target!r}: give a .safetensors file name")
    try:
        config = (DetectorConfig.from_json(Path(args.config).read_text(), args.config)
                  if args.config else None)
        info = convert_weights(args.source, args.target, config)
    except (WeightsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"checked {info.summary()}\nwrote {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
