"""Convert an LXMERT feature TSV into a memory-mapped feature store.

    python -m tools.convert_tsv IN.tsv [--out DIR] [--fp16] [--topk K] [--cache-dir DIR] [--force]

Without --out the store goes where ``open_feature_store`` looks for it (next to the TSV as
``<stem>.store/``, or under --cache-dir / $LXRT_FEATURE_CACHE). A folder already at that place
is replaced only when it is a store this program wrote; any other folder is left as it is
and the command stops naming it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from tasks.common.features import (FeatureStore, convert_tsv_to_store, read_manifest,
                                   store_path_for, _source_info, _source_matches)
from tasks.common.store_folder import ForeignFolderError, check_replaceable, store_lock


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.convert_tsv", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tsv", help="LXMERT feature TSV (img_id, img_h, img_w, ..., features)")
    ap.add_argument("--out", help="store directory to write (default: next to the TSV)")
    ap.add_argument("--fp16", action="store_true", help="store features as float16")
    ap.add_argument("--topk", type=int, default=None, help="convert only the first K rows")
    ap.add_argument("--cache-dir", default=None, help="cache root (default $LXRT_FEATURE_CACHE)")
    ap.add_argument("--force", action="store_true", help="reconvert even if a valid store exists")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    out = args.out or store_path_for(args.tsv, args.cache_dir, args.fp16)
    man = read_manifest(out)
    if (man is not None and not args.force and _source_matches(man, _source_info(args.tsv))
            and man.get("topk") == (args.topk if args.topk and args.topk > 0 else None)
            and man["feat_dtype"] == ("float16" if args.fp16 else "float32")):
        print(f"{out}: already converted ({man['rows']} rows); use --force to redo")
        return 0
    t0 = time.time()
    try:
        check_replaceable(out)  # a folder of the user's at --out is refused, lock not taken
        with store_lock(out):  # a training job converting the same store waits, or we do
            convert_tsv_to_store(args.tsv, out, fp16=args.fp16, topk=args.topk,
                                 progress=not args.quiet)
    except (FileNotFoundError, ForeignFolderError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    store = FeatureStore(out)
    m = store.manifest
    print(json.dumps({"store": str(out), "rows": m["rows"], "complete": m["complete"],
                      "feat_dim": m["feat_dim"], "feat_dtype": m["feat_dtype"],
                      "uniform_num_boxes": m["uniform_num_boxes"],
                      "duplicates": m["duplicates"],
                      "seconds": round(time.time() - t0, 2)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
