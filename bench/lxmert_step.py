"""Time LXMERT's own pre-training step on the CPU: the public airsplay/lxmert code, unmodified,
from a checkout the caller names, on a generated data root in its layout.

    python bench/lxmert_step.py --lxmert PATH --data ROOT --vocab VOCAB.txt [--device cpu]
                                [--model-config JSON] [--batch 256] [--steps 3] [--threads N]

bench/bench_pretrain.py runs this in a subprocess (LXMERT's modules parse the command line
and load their data when imported). Nothing of LXMERT is changed; three things around it
make it run here: `.cuda()` is a no-op on the CPU (on a GPU it runs as written), and the tokenizer and the model are built
from a local vocabulary and a config instead of being downloaded (`from_pretrained`), with
the weights re-initialised as its --fromScratch does. The step timed is LXMERT's
`train_batch`: its host work (turning examples into masked features, in the main process)
and the model's forward, backward, clipping and BertAdam step. The batches come from its own
DataLoader. Prints one JSON line. (This project's own `lxrt` package is kept off the path:
LXMERT's has the same name.)
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def lxmert_flags(batch: int) -> list[str]:
    """LXMERT's run/lxmert_pretrain.bash tasks and recipe, on the LXMERT-S layers (0/5/0)."""
    return ["--taskMaskLM", "--taskObjPredict", "--taskMatched", "--taskQA",
            "--visualLosses", "obj,attr,feat", "--wordMaskRate", "0.15", "--objMaskRate", "0.15",
            "--train", "mscoco_train,mscoco_nominival,vgnococo", "--valid", "mscoco_minival",
            "--llayers", "0", "--xlayers", "5", "--rlayers", "0", "--fromScratch",
            "--batchSize", str(batch), "--optim", "bert", "--lr", "1e-4", "--epochs", "1"]


def build_offline(lxmert_src: Path, vocab_file: str, model_config, device: str) -> None:
    """Make LXMERT's code importable and runnable here without touching it."""
    if device == "cpu":
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    # LXMERT's lxrt is a namespace package: a regular `lxrt` (this project's) anywhere on the
    # path would win over it
    sys.path = [str(lxmert_src)] + [p for p in sys.path
                                    if not (Path(p or ".") / "lxrt" / "__init__.py").is_file()]
    from lxrt import modeling, tokenization

    def tokenizer(cls, name, *inputs, **kwargs):
        return cls(vocab_file, do_lower_case=True)

    def model(cls, name, *inputs, **kwargs):
        config = modeling.BertConfig(str(model_config) if model_config else 30522)
        return cls(config, *inputs, **kwargs)

    tokenization.BertTokenizer.from_pretrained = classmethod(tokenizer)
    modeling.LXRTPretraining.from_pretrained = classmethod(model)


def batches(loader):
    while True:
        yield from loader


def measure(args) -> dict:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    build_offline(Path(args.lxmert) / "src", args.vocab, args.model_config, args.device)
    with tempfile.TemporaryDirectory() as work:
        os.symlink(Path(args.data).resolve(), Path(work) / "data")  # it reads data/...
        os.chdir(work)
        sys.argv = ["lxmert_pretrain.py", *lxmert_flags(args.batch)]
        # the checkout's modules (not installed packages): its script and its optimizer
        lp = importlib.import_module("pretrain.lxmert_pretrain")
        LxmertBertAdam = importlib.import_module("lxrt.optimization").BertAdam
        lxmert = lp.LXMERT(max_seq_length=20)
        optim = LxmertBertAdam(list(lxmert.model.parameters()), lr=1e-4, warmup=0.05,
                               t_total=1000)
        source = batches(lp.train_tuple.loader)
        lxmert.train_batch(optim, next(source))  # warm-up
        load = convert = step = 0.0
        for _ in range(args.steps):
            t0 = time.perf_counter()
            batch = next(source)
            t1 = time.perf_counter()
            for example in batch:  # the host part of its step, timed alone
                lp.convert_example_to_features(example, 20, lxmert.tokenizer)
            t2 = time.perf_counter()
            lxmert.train_batch(optim, batch)
            if args.device != "cpu":
                torch.cuda.synchronize()
            t3 = time.perf_counter()
            load, convert, step = load + t1 - t0, convert + t2 - t1, step + t3 - t2
    n = args.steps
    size = args.batch
    return {"samples_per_s": round(size * n / (load + step), 1),
            "seconds_per_step": round((load + step) / n, 3),
            "host_seconds_per_step": round((load + convert) / n, 3),
            "model_samples_per_s": round(size * n / max(step - convert, 1e-9), 1),
            "threads": torch.get_num_threads()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lxmert", required=True, help="a checkout of airsplay/lxmert")
    p.add_argument("--data", required=True, help="a data root of tools.make_data (dim 2048)")
    p.add_argument("--vocab", required=True, help="the BERT uncased vocabulary file")
    p.add_argument("--model-config", default=None,
                   help="BERT config JSON of the model sizes (default: bert-base)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if not (Path(args.lxmert) / "src" / "pretrain" / "lxmert_pretrain.py").is_file():
        raise SystemExit(f"--lxmert {args.lxmert}: not a checkout of airsplay/lxmert (no "
                         f"src/pretrain/lxmert_pretrain.py)")
    result = measure(args)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
