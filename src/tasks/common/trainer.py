"""The one training / evaluation loop every task uses.

A task supplies its model, datasets, loss, evaluator and result writer (`Task` below); the
trainer alone owns the device, precision, DDP, optimizer, schedule, checkpoints and logs.

The recipe is the authors' (spec §3.0): BertAdam with warmup 0.1 over
t_total = len(train_loader) * epochs (drop_last), gradient clipping at global norm 5, seed 9595,
evaluation after each epoch, BEST.pth on strict improvement, LAST.pth. Additions: an exact
`--resume` from OUTPUT/resume.pth, atomic checkpoint writes, metrics.jsonl and run_info.json.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lxrt.optimization import BertAdam
from tasks.common import distributed as D
from tasks.common.batching import longest_first, text_lengths, trim_text_padding
from tasks.common.checkpoints import atomic_torch_save, atomic_write_json
from tasks.common.precision import autocast, grad_scaler

log = logging.getLogger("lxrt")


@dataclass
class EvalResult:
    score: float                       # the number model selection uses (higher is better)
    metrics: dict = field(default_factory=dict)
    predictions: object = None         # whatever the task's writer needs


class Task:
    """What a task supplies. Methods receive the `Trainer` for device/precision/loaders."""
    name = "task"

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def load_weights(self, model: nn.Module) -> None:
        """Pre-trained (--loadLXMERT / --loadLXMERTQA) or fine-tuned (--load) weights."""

    def train_dataset(self) -> Optional[Dataset]:
        return None

    def compute_loss(self, model: nn.Module, batch: dict):
        """-> (loss, stats) where stats maps names to summable 0-d tensors (e.g. hits)."""
        raise NotImplementedError

    def train_score(self, stats: dict, samples: int) -> Optional[float]:
        return None

    def evaluate(self, trainer: "Trainer", model: nn.Module, split: str) -> EvalResult:
        raise NotImplementedError

    def write_results(self, trainer: "Trainer", result: EvalResult, split: str) -> None:
        """Write the test-server / prediction file for `split` (rank 0 only)."""

    def run_info(self) -> dict:
        """What a predictor needs besides the weights (task, model sizes, answer table,
        feature files), recorded in run_info.json under "task_info"."""
        return {}


class EpochSampler(Sampler):
    """Shuffled indices, a new permutation per epoch from (seed, epoch), trimmed to whole global
    batches (drop_last), each global batch split across ranks. One process sees exactly what a
    shuffled DataLoader(drop_last=True) would; N processes share each global batch, so the
    schedule and the effective batch do not change with the number of GPUs. `start_batch`
    skips batches already done (exact mid-epoch resume).

    Length bucketing (opt-in, `bucket_batches` > 0 with per-example text `lengths`): each window
    of `bucket_batches` consecutive global batches of the permutation is sorted by length and cut
    into batches again, and the order of all batches is shuffled. Every example is still seen
    once per epoch; a batch then holds sentences of nearly equal length, so padding removal cuts
    it to about its own length instead of the longest of 32 random sentences."""

    def __init__(self, size: int, global_batch: int, info: D.DistInfo, seed: int,
                 lengths: Optional[np.ndarray] = None, bucket_batches: int = 0):
        if global_batch % info.world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by the "
                             f"{info.world_size} processes")
        if bucket_batches and (lengths is None or len(lengths) != size):
            raise ValueError("length bucketing needs one text length per example")
        self.size, self.global_batch, self.info, self.seed = size, global_batch, info, seed
        self.lengths = None if lengths is None else torch.as_tensor(np.asarray(lengths))
        self.bucket_batches = bucket_batches
        self.local_batch = global_batch // info.world_size
        self.epoch, self.start_batch = 0, 0

    @property
    def num_batches(self) -> int:
        return self.size // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def global_batches(self) -> torch.Tensor:
        """This epoch's global batches [num_batches, global_batch] of example indices."""
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(self.size, generator=g)[: self.num_batches * self.global_batch]
        if not self.bucket_batches:
            return order.view(self.num_batches, self.global_batch)
        window = self.bucket_batches * self.global_batch
        chunks = []
        for start in range(0, len(order), window):
            part = order[start:start + window]
            chunks.append(part[torch.sort(self.lengths[part], stable=True).indices])
        batches = torch.cat(chunks).view(self.num_batches, self.global_batch)
        return batches[torch.randperm(self.num_batches, generator=g)]

    def __iter__(self):
        order = self.global_batches().view(self.num_batches, self.info.world_size,
                                           self.local_batch)
        return iter(order[self.start_batch:, self.info.rank].reshape(-1).tolist())

    def __len__(self) -> int:
        return (self.num_batches - self.start_batch) * self.local_batch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(requested: Optional[str]) -> torch.device:
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {requested}: this machine has no CUDA GPU (torch "
                         f"{torch.__version__}); run on the CPU with the launcher's first "
                         f"argument `cpu` or --device cpu")
    return device


def default_num_workers(device: torch.device, usable_cpus: Optional[int] = None,
                        processes_per_node: Optional[int] = None) -> int:
    """DataLoader workers when --numWorkers is not given. On a GPU reading features and
    collating batches must keep up with 2,000+ samples/s, so each process takes its share of
    the cores (one left for the training process itself), between 2 and 8. On the CPU the
    workers compete with the model for the same cores: 2."""
    if device.type != "cuda":
        return 2
    if usable_cpus is None:
        usable_cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else os.cpu_count() or 2)
    per_node = processes_per_node or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(2, min(8, usable_cpus // max(per_node, 1) - 1))


CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # compile modes that capture CUDA graphs


def compile_module(module: nn.Module, mode: Optional[str]) -> nn.Module:
    """`module` under torch.compile in `mode` (None: unchanged; "default": plain compile)."""
    if not mode:
        return module
    return torch.compile(module, mode=None if mode == "default" else mode)


def mark_step_if_graphed(mode: Optional[str]) -> None:
    """Start of a training iteration under CUDA graphs: the previous replay's outputs may be
    overwritten from here on (call before each step's forward)."""
    if mode in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()


def git_commit() -> Optional[str]:
    try:
        root = Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Trainer:
    def __init__(self, args, task: Task):
        self.args, self.task = args, task
        self.device = resolve_device(args.device)
        self.dist = D.init_distributed(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.output = Path(args.output)
        self.is_main = self.dist.is_main
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
        setup_logging(self.output / "log.txt" if self.is_main else None, self.is_main)
        seed_everything(args.seed)
        self.precision = args.precision
        self.scaler = grad_scaler(self.device, self.precision)
        self.num_workers = args.num_workers
        if self.num_workers is None:
            self.num_workers = default_num_workers(self.device)
            log.info("data loading: %d workers per process", self.num_workers)

    # ---- device and loaders -------------------------------------------------------------

    def autocast(self):
        return autocast(self.device, self.precision)

    def to_device(self, batch: dict) -> dict:
        if getattr(self.args, "trim_padding", True):
            batch = trim_text_padding(batch)
        nb = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=nb) if torch.is_tensor(v) else v
                for k, v in batch.items()}

    def _loader(self, dataset, batch_size, sampler=None, worker_init_fn=None, seed=0):
        workers = self.num_workers
        # A loader-owned generator: creating an iterator must not consume the global RNG, or
        # dropout masks after --resume would differ from an uninterrupted run.
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                          num_workers=workers, pin_memory=self.device.type == "cuda",
                          prefetch_factor=4 if workers else None, generator=generator,
                          worker_init_fn=worker_init_fn, drop_last=False)

    def eval_batch_size(self) -> int:
        return self.args.eval_batch_size or max(1, 4 * self.args.batch_size // self.dist.world_size)

    def predict(self, model: nn.Module, dataset: Dataset, step: Callable, desc: str = "eval"):
        """Run `step(model, batch) -> dict of [B, ...] tensors` over `dataset` (sharded across
        ranks) and return the outputs concatenated on the CPU in dataset order."""
        indices = list(range(self.dist.rank, len(dataset), self.dist.world_size))
        lengths = text_lengths(dataset)
        if lengths is not None and getattr(self.args, "trim_padding", True):
            indices = longest_first(indices, lengths)  # outputs go back to dataset order below
        subset = torch.utils.data.Subset(dataset, indices)
        loader = self._loader(subset, self.eval_batch_size())
        chunks: dict = {}
        model.eval()
        with torch.no_grad(), self.autocast():
            for batch in progress(loader, desc, self.is_main and self.use_tqdm):
                out = step(model, self.to_device(batch))
                for key, value in out.items():
                    chunks.setdefault(key, []).append(value.detach())
        local = {k: torch.cat(v).float().cpu() if v[0].is_floating_point() else torch.cat(v).cpu()
                 for k, v in chunks.items()}
        gathered = D.gather_objects(self.dist, (indices, local))
        order = torch.tensor([i for idx, _ in gathered for i in idx], dtype=torch.long)
        merged = {k: torch.cat([part[k] for _, part in gathered]) for k in local}
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return {k: v[inverse] for k, v in merged.items()}

    @property
    def use_tqdm(self) -> bool:
        return bool(self.args.tqdm) or sys.stderr.isatty()

    # ---- model --------------------------------------------------------------------------

    def prepare_model(self) -> nn.Module:
        model = self.task.build_model()
        self.task.load_weights(model)
        model.to(self.device)
        n = sum(p.numel() for p in model.parameters())
        log.info("model: %s, %.1f M parameters, device %s, precision %s, %d process(es)",
                 type(model).__name__, n / 1e6, self.device, self.precision, self.dist.world_size)
        return model

    def _wrap(self, model: nn.Module) -> nn.Module:
        wrapped = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
        if self.args.compile:  # after DDP, as PyTorch recommends (DDP-aware graph breaks)
            wrapped = compile_module(wrapped, self.args.compile)
            log.info("torch.compile, mode %s", self.args.compile)
        return wrapped

    # ---- training -----------------------------------------------------------------------

    def fit(self, model: nn.Module, valid_split: Optional[str]) -> Optional[EvalResult]:
        args = self.args
        dataset = self.task.train_dataset()
        buckets = getattr(args, "length_buckets", 0)
        lengths = text_lengths(dataset) if buckets else None
        if buckets and lengths is None:
            log.warning("--lengthBuckets ignored: %s has no pre-tokenized text lengths",
                        type(dataset).__name__)
            buckets = 0
        elif buckets:
            log.info("length-bucketed batches: each window of %d batches sorted by text length",
                     buckets)
        sampler = EpochSampler(len(dataset), args.batch_size, self.dist, args.seed, lengths,
                               buckets)
        if sampler.num_batches == 0:
            raise SystemExit(f"training set has {len(dataset)} examples, fewer than one batch "
                             f"of {args.batch_size}")
        t_total = sampler.num_batches * args.epochs
        optimizer = BertAdam(list(model.parameters()), lr=args.lr, warmup=args.warmup,
                             t_total=t_total)
        state = self._resume_state(model, optimizer)
        train_model = self._wrap(model)
        log.info("training: %d examples, %d steps/epoch, %d epochs, t_total %d, batch %d "
                 "(%d per process)", len(dataset), sampler.num_batches, args.epochs, t_total,
                 args.batch_size, sampler.local_batch)
        best_result = None
        for epoch in range(state["epoch"], args.epochs):
            sampler.set_epoch(epoch, state["batch"])
            if hasattr(dataset, "set_epoch"):  # e.g. retrieval negatives seeded per epoch
                dataset.set_epoch(epoch)
            loader = self._loader(dataset, sampler.local_batch, sampler=sampler,
                                  worker_init_fn=getattr(dataset, "worker_init_fn", None),
                                  seed=args.seed * 1000 + epoch)
            stats, seconds, stopped = self._train_epoch(train_model, model, optimizer, loader,
                                                        epoch, state)
            if stopped:
                return None
            state["batch"] = 0
            result = self._end_of_epoch(model, optimizer, epoch, stats, seconds, valid_split,
                                        state)
            best_result = result or best_result
        return best_result

    def _train_epoch(self, train_model, model, optimizer, loader, epoch, state):
        args = self.args
        params = [p for p in model.parameters() if p.requires_grad]
        stats, samples, started = {}, 0, time.time()
        first_batch = state["batch"]  # > 0 when resuming mid-epoch
        total = len(loader)
        bar = progress(loader, f"epoch {epoch}", self.is_main and self.use_tqdm, total=total)
        running = torch.zeros((), device=self.device)
        for i, batch in enumerate(bar):
            batch = self.to_device(batch)
            mark_step_if_graphed(args.compile)
            train_model.train()
            with self.autocast():
                loss, step_stats = self.task.compute_loss(train_model, batch)
            optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, args.clip_norm)
                self.scaler.step(optimizer)
                self.scaler.update()
            else:
                loss.backward()
                nn.utils.clip_grad_norm_(params, args.clip_norm)
                optimizer.step()
            running += loss.detach()
            for key, value in step_stats.items():
                stats[key] = stats.get(key, 0) + value.detach()
            samples += args.batch_size
            state["global_step"] += 1
            state["batch"] = first_batch + i + 1
            if hasattr(bar, "set_postfix") and (i + 1) % 20 == 0:  # .item() syncs: not every step
                rate = samples / max(time.time() - started, 1e-9)
                bar.set_postfix(loss=f"{running.item() / (i + 1):.4f}", samples_s=f"{rate:.0f}")
            if args.checkpoint_every and state["global_step"] % args.checkpoint_every == 0:
                self._save_resume(model, optimizer, epoch, state)
            if args.stop_after_steps and state["global_step"] >= args.stop_after_steps:
                self._save_resume(model, optimizer, epoch, state)
                log.info("stopping after %d steps as asked (--stopAfterSteps); resume with "
                         "--resume", state["global_step"])
                return stats, time.time() - started, True
        stats["loss_sum"] = running
        stats["steps"] = torch.tensor(float(total))
        return stats, time.time() - started, False

    def _end_of_epoch(self, model, optimizer, epoch, stats, seconds, valid_split, state):
        args = self.args
        steps = max(stats["steps"].item(), 1)
        # mean over every rank's batches (each rank's loss is the mean of its local batch)
        loss_sum = D.sum_over_ranks(self.dist, stats["loss_sum"]).item()
        train_loss = loss_sum / steps / self.dist.world_size
        samples = steps * args.batch_size  # global: every rank did `steps` local batches
        summed = {k: D.sum_over_ranks(self.dist, v) for k, v in stats.items()
                  if k not in ("loss_sum", "steps")}
        train_score = self.task.train_score(summed, int(samples))
        record = {"epoch": epoch, "train_loss": train_loss, "train_seconds": seconds,
                  "train_samples_per_s": samples / max(seconds, 1e-9)}
        lines = [f"Epoch {epoch}: Train {train_score * 100:0.2f}" if train_score is not None
                 else f"Epoch {epoch}: Train loss {train_loss:0.4f}"]
        result = None
        if valid_split:
            result = self.task.evaluate(self, model, valid_split)
            record["valid"] = result.metrics
            if result.score > state["best"]:
                state["best"] = result.score
                if self.is_main:
                    atomic_torch_save(model.state_dict(), self.output / "BEST.pth")
            lines += [f"Epoch {epoch}: Valid {result.score * 100:0.2f}",
                      f"Epoch {epoch}: Best {state['best'] * 100:0.2f}"]
        if train_score is not None:
            record["train_score"] = train_score
        record["best"] = state["best"] if valid_split else None
        if self.is_main:
            atomic_torch_save(model.state_dict(), self.output / "LAST.pth")
            with open(self.output / "log.log", "a") as handle:
                handle.write("\n" + "\n".join(lines) + "\n")
            with open(self.output / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
        for line in lines:
            log.info(line)
        self._save_resume(model, optimizer, epoch + 1, state)
        return result

    # ---- resume -------------------------------------------------------------------------

    def _resume_state(self, model, optimizer) -> dict:
        state = {"epoch": 0, "batch": 0, "global_step": 0, "best": -math.inf}
        path = self.output / "resume.pth"
        if not self.args.resume:
            return state
        if not path.is_file():
            raise SystemExit(f"--resume: no resume state at {path}")
        saved = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"][min(self.dist.rank, len(saved["rng"]) - 1)])
        state.update({k: saved[k] for k in ("epoch", "batch", "global_step", "best")})
        log.info("resumed from %s: epoch %d, batch %d, step %d, best %s", path, state["epoch"],
                 state["batch"], state["global_step"], state["best"])
        return state

    def _save_resume(self, model, optimizer, epoch, state) -> None:
        rngs = D.gather_objects(self.dist, rng_state())
        if not self.is_main:
            return
        atomic_torch_save({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rngs, "epoch": epoch, "batch": state["batch"],
            "global_step": state["global_step"], "best": state["best"],
            "args": vars(self.args)}, self.output / "resume.pth")

    # ---- run info -----------------------------------------------------------------------

    def write_run_info(self, argv) -> None:
        if not self.is_main:
            return
        import transformers  # noqa: F401  (versions only)
        versions = {"python": platform.python_version(), "torch": torch.__version__,
                    "numpy": np.__version__, "transformers": transformers.__version__}
        info = {"argv": list(argv), "args": vars(self.args), "git_commit": git_commit(),
                "versions": versions, "device": str(self.device),
                "world_size": self.dist.world_size, "host": platform.node(),
                "cuda": torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                else None, "task_info": self.task.run_info()}
        atomic_write_json(self.output / "run_info.json", info, indent=2, default=str)

    def close(self) -> None:
        D.shutdown(self.dist)


def progress(iterable, desc: str, enabled: bool, total: Optional[int] = None):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, leave=False)


def setup_logging(path: Optional[Path], is_main: bool) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_lxrt", False):
            root.removeHandler(handler)
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler()]
    if path is not None:
        handlers.append(logging.FileHandler(path))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler._lxrt = True
        root.addHandler(handler)


def run_task(args, task: Task, argv) -> dict:
    """What every task's `main(argv)` does: train (then validate each epoch), or with --test
    predict one split, report its metrics and write its result file. Returns a summary."""
    trainer = Trainer(args, task)
    try:
        trainer.write_run_info(argv if argv is not None else sys.argv[1:])
        model = trainer.prepare_model()
        summary: dict = {"output": str(trainer.output)}
        if args.test:
            result = task.evaluate(trainer, model, args.test)
            task.write_results(trainer, result, args.test)
            summary["test"] = result.metrics
            log.info("test %s: %s", args.test, json.dumps(result.metrics))
            if trainer.is_main:
                with open(trainer.output / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps({"test": args.test, **result.metrics}) + "\n")
        elif args.train:
            best = trainer.fit(model, args.valid or None)
            summary["best"] = best.metrics if best is not None else None
        return summary
    finally:
        trainer.close()
