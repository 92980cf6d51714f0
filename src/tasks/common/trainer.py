"""The one training / evaluation loop every task uses.

A task supplies its model, datasets, loss, evaluator and result writer (`Task` below); the
trainer alone owns the device, precision, DDP, optimizer, schedule, checkpoints and logs.

The recipe is the authors' (docs/authors_code.md, "Training recipe"): BertAdam with warmup 0.1
over t_total = len(train_loader) * epochs (drop_last), gradient clipping at global norm 5,
seed 9595, evaluation after each epoch, BEST.pth on strict improvement, LAST.pth. Additions:
an exact `--resume` from OUTPUT/resume.pth, atomic checkpoint writes, metrics.jsonl and
run_info.json, gradient accumulation (--gradAccum).

Where training stands is a `TrainState`; the trainer's own running totals of the epoch
(`EpochTotals`: loss sum, steps, samples, seconds) are kept apart from the task's stats, so a
task may name its stats as it likes."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lxrt.optimization import BertAdam
from tasks.common import distributed
from tasks.common.batching import (longest_first, split_batch, text_lengths,
                                   trim_text_padding)
from tasks.common.checkpoints import (atomic_torch_save, atomic_write_json,
                                      remove_stale_temporaries)
from tasks.common.divergence import NONFINITE_CHECK_EVERY, NonFiniteLossWatch
from tasks.common.evaluation import EvalContext
from tasks.common.task import CheckpointFiles, EvalResult, Task  # noqa: F401 (re-exported)
from tasks.common.precision import autocast, grad_scaler
from tasks.common.resume import (RESUME_FORMAT, check_same_run, epoch_stats_to_plain,
                                 load_resume_file, plain_args, plain_data, plain_scalar,
                                 rng_state, set_rng_state)
from tasks.common.run_folder import RunLock, append_metrics, start_metrics_section
from tasks.common.run_record import check_loaded_runs
from tasks.common.runtime import (compile_module, default_num_workers, entry_point, git_commit,
                                  gpu_name, library_versions, mark_step_if_graphed, progress,
                                  resolve_device, seed_everything, setup_logging)
from tasks.common.sampler import EpochSampler, training_sampler
from tasks.common.scalar_log import scalar_log
from tasks.common.settings import Settings, parse_settings
from tasks.common.task_dataset import TaskDataset

log = logging.getLogger(__name__)


def improves(score: float, best_score: float, best_epoch: Optional[int], is_loss: bool) -> bool:
    """Strictly better than the best so far: a higher score (the best starts at -inf), or
    for a loss a lower one (the first finite loss is the first best)."""
    if not is_loss:
        return score > best_score
    return math.isfinite(score) and (best_epoch is None or score < best_score)


def format_score(score: float, is_loss: bool) -> str:
    """`loss 6.6079` for a loss, `66.08` (percent) for an accuracy-like score."""
    return f"loss {score:0.4f}" if is_loss else f"{score * 100:0.2f}"


@dataclass
class EpochTotals:
    """The trainer's own running totals of the epoch in progress (resumed mid-epoch too)."""
    loss_sum: Optional[torch.Tensor] = None  # this rank's batch losses, summed on the device
    steps: int = 0          # batches done in this epoch: where a resume starts the epoch
    samples: int = 0        # examples trained on in this epoch, all ranks together
    seconds: float = 0.0    # training time of this epoch (validation excluded)

    def add_step(self, loss: torch.Tensor, global_batch: int) -> None:
        loss = loss.detach().float()
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.steps += 1
        self.samples += global_batch


@dataclass
class TrainState:
    """Where training stands: what --resume restores besides the model, the optimizer, the
    grad scaler and the RNG states."""
    epoch: int = 0                   # the epoch in progress (or whose validation is owed)
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: Optional[int] = None
    best_metrics: Optional[dict] = None
    totals: EpochTotals = field(default_factory=EpochTotals)
    task_stats: dict = field(default_factory=dict)  # compute_loss stats summed on this rank

    def add_step(self, loss: torch.Tensor, task_stats: dict, global_batch: int) -> None:
        self.totals.add_step(loss, global_batch)
        self.global_step += 1
        for key, value in task_stats.items():
            self.task_stats[key] = self.task_stats.get(key, 0) + value.detach()

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.totals, self.task_stats = epoch, EpochTotals(), {}

    def best_result(self) -> Optional[EvalResult]:
        if self.best_epoch is None:
            return None
        return EvalResult(self.best_score, self.best_metrics, epoch=self.best_epoch)

    def saved_fields(self) -> dict:
        """The fields resume.pth holds at its top level (plain data)."""
        return {"epoch": self.epoch, "batch": self.totals.steps, "global_step": self.global_step,
                "best_score": self.best_score, "best_epoch": self.best_epoch,
                "best_metrics": self.best_metrics, "seconds": self.totals.seconds,
                "samples": self.totals.samples}

    def rank_fields(self) -> dict:
        """This rank's part of resume.pth (0-d CPU tensors)."""
        loss_sum = self.totals.loss_sum if self.totals.loss_sum is not None else 0.0
        return {"loss_sum": plain_scalar(loss_sum),
                "task_stats": epoch_stats_to_plain(self.task_stats)}

    @classmethod
    def from_saved(cls, saved: dict, rank_part: Optional[dict],
                   device: torch.device) -> "TrainState":
        """The state saved in resume.pth; `rank_part` None: the epoch's running loss and stats
        are not restored (the number of processes changed, they cannot be split)."""
        totals = EpochTotals(steps=saved["batch"], samples=saved["samples"],
                             seconds=saved["seconds"])
        state = cls(epoch=saved["epoch"], global_step=saved["global_step"],
                    best_score=saved["best_score"], best_epoch=saved["best_epoch"],
                    best_metrics=saved["best_metrics"], totals=totals)
        if rank_part is not None:
            totals.loss_sum = rank_part["loss_sum"].to(device)
            state.task_stats = {k: v.to(device) for k, v in rank_part["task_stats"].items()}
        return state


class Trainer:
    def __init__(self, args, task: Task):
        self.args, self.task = args, task
        self.device = resolve_device(args.device)
        self.dist = distributed.init_distributed(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.output = Path(args.output)
        self.is_main = self.dist.is_main
        self.lock = None
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            # before anything is written: a second run in this folder stops here
            self.lock = RunLock(self.output).acquire()
        try:
            self._setup(args)
        except BaseException:
            self.close()
            raise

    def _setup(self, args) -> None:
        setup_logging(self.output / "log.txt" if self.is_main else None, self.is_main)
        if self.is_main:
            remove_stale_temporaries(self.output)
        seed_everything(args.seed)
        self.precision = args.precision
        self.scaler = grad_scaler(self.device, self.precision)
        self._inputs: dict = {}  # what resume.pth records of the training data (see fit)
        self.num_workers = args.num_workers
        if self.num_workers is None:
            self.num_workers = default_num_workers(self.device)
            log.info("data loading: %d workers per process", self.num_workers)
        self.scalars = scalar_log(args, self.output, self.is_main)  # --tensorboard

    # ---- device and loaders -------------------------------------------------------------

    def autocast(self):
        return autocast(self.device, self.precision)

    def to_device(self, batch: dict) -> dict:
        if self.args.trim_padding:
            batch = trim_text_padding(batch)
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=non_blocking) if torch.is_tensor(v) else v
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

    def context(self) -> EvalContext:
        """What a task's evaluation and result writer see of the trainer."""
        return EvalContext(device=self.device, autocast=self.autocast, dist=self.dist,
                           is_main=self.is_main, progress=self.shows_progress,
                           output=self.output, run_batches=self._eval_batches)

    def _eval_batches(self, model: nn.Module, dataset: Dataset, step: Callable, desc: str):
        """`step(model, batch)` over this rank's share of `dataset` (longest text first when
        padding is trimmed) -> (the share's dataset indices, the outputs of each batch)."""
        indices = list(range(self.dist.rank, len(dataset), self.dist.world_size))
        lengths = text_lengths(dataset)
        if lengths is not None and self.args.trim_padding:
            indices = longest_first(indices, lengths)  # EvalContext.predict restores the order
        subset = torch.utils.data.Subset(dataset, indices)
        loader = self._loader(subset, self.eval_batch_size())
        outputs = []
        model.eval()
        with torch.no_grad(), self.autocast():
            for batch in progress(loader, desc, self.shows_progress):
                outputs.append(step(model, self.to_device(batch)))
        return indices, outputs

    @property
    def use_tqdm(self) -> bool:
        return bool(self.args.tqdm) or sys.stderr.isatty()

    @property
    def shows_progress(self) -> bool:
        """Progress bars are drawn by rank 0 only."""
        return self.is_main and self.use_tqdm

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

    def _train_dataset(self) -> TaskDataset:
        dataset = self.task.train_dataset()
        if not isinstance(dataset, TaskDataset):
            raise TypeError(f"{type(self.task).__name__}.train_dataset() returned a "
                            f"{type(dataset).__name__}; a training set must derive from "
                            f"tasks.common.task_dataset.TaskDataset")
        return dataset

    def fit(self, model: nn.Module, valid_split: Optional[str]) -> Optional[EvalResult]:
        """Train for --epochs, validating after each; returns the BEST epoch's result (its
        `epoch` set), None without validation or when stopped early (--stopAfterSteps)."""
        args = self.args
        dataset = self._train_dataset()
        sampler = training_sampler(dataset, args.batch_size, self.dist, args.seed,
                                   args.length_buckets)
        if sampler.local_batch % args.grad_accum:
            raise SystemExit(f"--gradAccum {args.grad_accum} must divide the batch of each "
                             f"process ({sampler.local_batch})")
        t_total = sampler.num_batches * args.epochs
        optimizer = BertAdam(list(model.parameters()), lr=args.lr, warmup=args.warmup,
                             t_total=t_total)
        self._inputs = {"train_examples": len(dataset), "train_sha1": dataset.fingerprint(),
                        **self.task.run_inputs()}
        state = self._resume(model, optimizer) if args.resume else TrainState()
        train_model = self._wrap(model)
        log.info("training: %d examples, %d steps/epoch, %d epochs, t_total %d, batch %d "
                 "(%d per process)", len(dataset), sampler.num_batches, args.epochs, t_total,
                 args.batch_size, sampler.local_batch)
        while state.epoch < args.epochs:
            if state.totals.steps < sampler.num_batches:
                loader = self._epoch_loader(dataset, sampler, state)
                if self._train_epoch(train_model, model, optimizer, loader, state):
                    return None
            else:  # resumed from the epoch's last step: its validation is still owed
                log.info("epoch %d: training was complete when the run stopped; running its "
                         "validation now", state.epoch)
            self._end_of_epoch(model, optimizer, valid_split, state)
        return state.best_result()

    def _epoch_loader(self, dataset: TaskDataset, sampler: EpochSampler,
                      state: TrainState) -> DataLoader:
        """The loader of the epoch in progress, from the batch a resume starts at."""
        sampler.set_epoch(state.epoch, state.totals.steps)
        dataset.set_epoch(state.epoch)
        return self._loader(dataset, sampler.local_batch, sampler=sampler,
                            worker_init_fn=dataset.worker_init_fn,
                            seed=self.args.seed * 1000 + state.epoch)

    def _train_step(self, train_model, optimizer, params, batch: dict):
        """One optimizer step on `batch` -> (loss, the task's stats of the batch). With
        --gradAccum N the batch is cut into N micro-batches, each loss / N is back-propagated
        and the gradients add up before the one step; the loss is the micro-batches' mean."""
        mark_step_if_graphed(self.args.compile)
        train_model.train()
        optimizer.zero_grad(set_to_none=True)
        parts = split_batch(batch, self.args.grad_accum)
        loss_sum, task_stats = None, {}
        for k, part in enumerate(parts):
            with self._gradient_sync(train_model, k == len(parts) - 1):
                with self.autocast():
                    loss, part_stats = self.task.compute_loss(train_model, part)
                scaled = loss / len(parts) if len(parts) > 1 else loss
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            for key, value in part_stats.items():
                task_stats[key] = task_stats.get(key, 0) + value.detach()
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
            self.grad_norm = nn.utils.clip_grad_norm_(params, self.args.clip_norm)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            self.grad_norm = nn.utils.clip_grad_norm_(params, self.args.clip_norm)
            optimizer.step()
        return loss_sum / len(parts) if len(parts) > 1 else loss_sum, task_stats

    @staticmethod
    def _gradient_sync(train_model, last_part: bool):
        """DDP all-reduces the gradients on the last micro-batch of a step only."""
        no_sync = getattr(train_model, "no_sync", None)  # DDP (also under torch.compile)
        return contextlib.nullcontext() if last_part or no_sync is None else no_sync()

    def _train_epoch(self, train_model, model, optimizer, loader, state: TrainState) -> bool:
        """Train the rest of epoch `state.epoch`; True when stopped (--stopAfterSteps)."""
        params = [p for p in model.parameters() if p.requires_grad]
        totals, started = state.totals, time.time()
        seconds_before = totals.seconds  # > 0 when resuming mid-epoch
        bar = progress(loader, f"epoch {state.epoch}", self.shows_progress, total=len(loader))
        watch = NonFiniteLossWatch(self.device)
        for done_here, batch in enumerate(bar, start=1):
            batch = self.to_device(batch)
            loss, task_stats = self._train_step(train_model, optimizer, params, batch)
            watch.update(loss, totals.steps, batch.get("index"))
            state.add_step(loss, task_stats, self.args.batch_size)
            totals.seconds = seconds_before + time.time() - started
            if self.scalars.wants_step(state.global_step):
                self.scalars.log_step(state.global_step, loss.item(), optimizer.get_lr()[0],
                                      self.grad_norm.item(), totals.samples, totals.seconds)
            if self._after_step(model, optimizer, state, watch, bar, done_here):
                return True
        watch.check(self.dist, state.epoch, state.global_step - totals.steps)
        return False

    def _after_step(self, model, optimizer, state: TrainState, watch: NonFiniteLossWatch,
                    bar, done_here: int) -> bool:
        """Checks, progress and the resume checkpoint after a step; True: stop (as asked)."""
        args, totals = self.args, state.totals
        checkpoint = bool(args.checkpoint_every
                          and state.global_step % args.checkpoint_every == 0)
        stop = bool(args.stop_after_steps and state.global_step >= args.stop_after_steps)
        periodic = done_here % NONFINITE_CHECK_EVERY == 0  # one host sync per this many steps
        if checkpoint or stop or periodic:
            watch.check(self.dist, state.epoch, state.global_step - totals.steps)
        if periodic and self.shows_progress:  # `bar` is a tqdm bar
            bar.set_postfix(loss=f"{totals.loss_sum.item() / totals.steps:.4f}",
                            samples_s=f"{totals.samples / max(totals.seconds, 1e-9):.0f}")
        if checkpoint or stop:
            self._save_resume(model, optimizer, state)
        if stop:
            log.info("stopping after %d steps as asked (--stopAfterSteps); resume with "
                     "--resume", state.global_step)
        return stop

    def _train_summary(self, state: TrainState) -> tuple[dict, list]:
        """The finished epoch's metrics record (training part) and its log lines."""
        totals = state.totals
        steps = max(totals.steps, 1)
        loss_sum = totals.loss_sum if totals.loss_sum is not None else torch.zeros(())
        # mean over every rank's batches (each rank's loss is the mean of its local batch)
        loss_sum = distributed.sum_over_ranks(self.dist, loss_sum).item()
        train_loss = loss_sum / steps / self.dist.world_size
        summed = {k: distributed.sum_over_ranks(self.dist, v) for k, v in state.task_stats.items()}
        train_score = self.task.train_score(summed, totals.samples)
        record = {"epoch": state.epoch, "train_loss": train_loss,
                  "train_seconds": totals.seconds,
                  "train_samples_per_s": totals.samples / max(totals.seconds, 1e-9)}
        lines = [f"Epoch {state.epoch}: Train {train_score * 100:0.2f}"
                 if train_score is not None
                 else f"Epoch {state.epoch}: Train loss {train_loss:0.4f}"]
        if train_score is not None:
            record["train_score"] = train_score
        extra = self.task.epoch_metrics(summed, totals.samples)
        if extra:
            record["train"] = extra
            lines.append(f"Epoch {state.epoch}: Train " +
                         " ".join(f"{k} {v:0.4f}" for k, v in extra.items()))
        return record, lines

    def _validate(self, model, valid_split: str, state: TrainState) -> EvalResult:
        """Evaluate the finished epoch; a strictly better score becomes the best checkpoint."""
        result = self.task.evaluate(self.context(), model, valid_split)
        if improves(result.score, state.best_score, state.best_epoch, self.task.score_is_loss):
            state.best_score, state.best_epoch = result.score, state.epoch
            state.best_metrics = plain_data(result.metrics)
            if self.is_main:
                self._save_weights(model, self.task.checkpoint_files.best)
        return result

    def _save_weights(self, model, name: str) -> None:
        atomic_torch_save(self.task.checkpoint_state(model), self.output / name)

    def _save_epoch_weights(self, model, epoch: int) -> None:
        """The task's checkpoint files of every epoch: LAST.pth, and maybe one per epoch."""
        files = self.task.checkpoint_files
        if files.per_epoch:
            self._save_weights(model, files.per_epoch.format(epoch=epoch, number=epoch + 1))
        self._save_weights(model, files.last)

    def _end_of_epoch(self, model, optimizer, valid_split, state: TrainState) -> None:
        """Log and record the finished epoch, validate, write BEST/LAST and the resume state
        (which then points at the next epoch)."""
        epoch = state.epoch
        record, lines = self._train_summary(state)
        if valid_split:
            result = self._validate(model, valid_split, state)
            record["valid"] = result.metrics
            is_loss = self.task.score_is_loss
            lines += [f"Epoch {epoch}: Valid {format_score(result.score, is_loss)}",
                      f"Epoch {epoch}: Best {format_score(state.best_score, is_loss)}"]
        record["best"] = state.best_score if valid_split else None
        record["best_epoch"] = state.best_epoch
        if self.is_main:
            self._save_epoch_weights(model, epoch)
            with open(self.output / "log.log", "a") as handle:
                handle.write("\n" + "\n".join(lines) + "\n")
            append_metrics(self.output, record)
            self.scalars.log_epoch(record)
        for line in lines:
            log.info(line)
        state.start_epoch(epoch + 1)
        self._save_resume(model, optimizer, state)

    # ---- resume -------------------------------------------------------------------------

    def _resume(self, model, optimizer) -> TrainState:
        """Model, optimizer, grad scaler and RNG states from OUTPUT/resume.pth; -> the state."""
        path = self.output / "resume.pth"
        saved = load_resume_file(path)
        check_same_run(path, saved.get("args"), self.args, saved.get("inputs"), self._inputs)
        model.load_state_dict(saved["model"])
        # The optimizer's hyper-parameters come from the flags of this run (the same unless
        # --resumeChangedFlags); its moments and step counts from the saved state.
        current = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        optimizer.load_state_dict(saved["optimizer"])
        for group, hyper in zip(optimizer.param_groups, current):
            group.update(hyper)
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        ranks = saved["per_rank"]
        mine = ranks[min(self.dist.rank, len(ranks) - 1)]
        set_rng_state(mine["rng"])
        same_ranks = len(ranks) == self.dist.world_size
        if not same_ranks:
            log.warning("--resume with %d processes, saved with %d: the running loss and stats "
                        "of the interrupted epoch start over", self.dist.world_size, len(ranks))
        state = TrainState.from_saved(saved, mine if same_ranks else None, self.device)
        log.info("resumed from %s: epoch %d, batch %d, step %d, best %s", path, state.epoch,
                 state.totals.steps, state.global_step, state.best_score)
        return state

    def _save_resume(self, model, optimizer, state: TrainState) -> None:
        per_rank = distributed.gather_objects(self.dist,
                                              {"rng": rng_state(), **state.rank_fields()})
        if not self.is_main:
            return
        atomic_torch_save({
            "format": RESUME_FORMAT, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "args": plain_args(self.args), "inputs": self._inputs, **state.saved_fields(),
            "per_rank": per_rank},
            self.output / "resume.pth")

    # ---- run info -----------------------------------------------------------------------

    def write_run_info(self, argv, sources: Optional[dict] = None) -> None:
        """run_info.json: the command, every setting's value (`args`) and where it came from
        (`sources`: default, a recipe, the command line), versions, device, task info."""
        if not self.is_main:
            return
        info = {"argv": list(argv), "entry_point": entry_point(), "args": vars(self.args),
                "sources": sources or {}, "git_commit": git_commit(),
                "versions": library_versions(), "device": str(self.device),
                "world_size": self.dist.world_size, "host": platform.node(),
                "cuda": gpu_name(self.device),
                "checkpoint_files": dataclasses.asdict(self.task.checkpoint_files),
                "task_info": self.task.run_info()}
        atomic_write_json(self.output / "run_info.json", info, indent=2, default=str)
        start_metrics_section(self.output, argv, bool(self.args.resume))

    def close(self) -> None:
        if hasattr(self, "scalars"):
            self.scalars.close()
        distributed.shutdown(self.dist)
        if self.lock is not None:
            self.lock.release()


def run_task(args, task: Task, argv, settings: Optional[Settings] = None) -> dict:
    """What every task's `main(argv)` does: train (then validate each epoch), or with --test
    predict one split, report its metrics and write its result file. Returns a summary.
    `settings`: where each value of `args` came from (`tasks.common.settings`)."""
    if not args.test and not args.train:
        raise SystemExit("nothing to do: give --train SPLITS to train (validating on --valid) "
                         "or --test SPLIT to predict a split")
    settings = settings or Settings.given(args)
    check_loaded_runs(args, task.run_info())  # before anything is written
    trainer = Trainer(args, task)
    try:
        for line in settings.overrides:
            log.info(line)
        trainer.write_run_info(argv if argv is not None else sys.argv[1:], settings.sources)
        model = trainer.prepare_model()
        summary: dict = {"output": str(trainer.output)}
        if args.test:
            ctx = trainer.context()
            result = task.evaluate(ctx, model, args.test)
            task.write_results(ctx, result, args.test)
            summary["test"] = result.metrics
            log.info("test %s: %s", args.test, json.dumps(result.metrics))
            if trainer.is_main:
                append_metrics(trainer.output, {"test": args.test, **result.metrics})
        elif args.train:
            best = trainer.fit(model, args.valid or None)
            summary["best"] = best.metrics if best is not None else None
            summary["best_epoch"] = best.epoch if best is not None else None
            if best is not None:
                log.info("best epoch %d: valid %s %s", best.epoch,
                         format_score(best.score, task.score_is_loss),
                         json.dumps(best.metrics, default=str))
        return summary
    finally:
        trainer.close()


def run_main(parser, make_task, argv, folder: str) -> dict:
    """A task's whole `main(argv)`: its settings (defaults, a recipe of the tasks whose entry
    point is `folder`.main, the command line), then `run_task` on `make_task(args)`."""
    settings = parse_settings(parser, argv, folder)
    return run_task(settings.args, make_task(settings.args), argv, settings)
