"""Pre-training end to end through main(argv) on generated data: the three MSP stages chained,
exact resume in the middle of a stage, fine-tuning VQA from the result, and --gradAccum."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from generated import common_flags
from lxrt.config import LXRTConfig
from lxrt.modeling import LXRTPretraining
from tasks.common.run_folder import read_metrics
from tasks.pretrain.main import main as pretrain_main
from tasks.pretrain.model import load_full

pytestmark = pytest.mark.slow  # end-to-end runs: not in the fast tier

CONFIGS = Path(__file__).resolve().parents[1] / "run" / "configs"
STAGES = ("token", "phrase", "sentence")


@pytest.fixture(scope="module")
def root(small_root, tmp_path_factory):
    """The shared generated root, and next to it (not in it) a model config without dropout,
    so that runs over different process counts or micro-batches match exactly."""
    config = json.loads((small_root / "bert_config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    nodrop = tmp_path_factory.mktemp("nodrop") / "bert_config_nodrop.json"
    nodrop.write_text(json.dumps(config))
    return small_root, nodrop


def flags(root, output: Path, stage: str, *extra) -> list[str]:
    data, nodrop = root
    return ["--stage", str(CONFIGS / "msp" / f"{stage}.json"),
            *common_flags(data, output, config=str(nodrop), load_lxmert=False),
            "--train", "mscoco_nominival", "--valid", "mscoco_minival", "--batchSize", "8",
            "--epochs", "1", *extra]


@pytest.fixture(scope="module")
def chain(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("msp")
    init: list[str] = []
    for stage in STAGES:
        pretrain_main(flags(root, out / stage, stage, *init))
        init = ["--init", str(out / stage / "LAST")]
    return out


@pytest.mark.parametrize("stage, losses", [
    ("token", {"mlm_loss", "obj_loss", "attr_loss", "feat_loss"}),
    ("phrase", {"mlm_loss", "topic_loss", "obj_loss", "attr_loss", "feat_loss"}),
    ("sentence", {"mlm_loss", "topic_loss", "matched_loss", "obj_loss", "attr_loss",
                  "feat_loss", "qa_loss"}),
])
def test_each_stage_writes_checkpoints_and_per_task_figures(chain, stage, losses):
    out = chain / stage
    weights = {p.name for p in out.glob("*.pth")}
    # the authors' files only: no BEST.pth / LAST.pth copies in the trainer's layout
    # numbered from 1 as LXMERT (Epoch01 after the first epoch, metrics.jsonl's epoch 0)
    assert weights == {"Epoch01_LXRT.pth", "LAST_LXRT.pth", "BEST_EVAL_LOSS_LXRT.pth",
                       "resume.pth"}
    record = read_metrics(out / "metrics.jsonl")[-1]
    assert {k for k in record["train"] if k.endswith("_loss")} == losses
    assert all(math.isfinite(v) for v in record["train"].values())
    assert math.isfinite(record["valid"]["loss"]) and record["best"] == record["valid"]["loss"]
    log = (out / "log.log").read_text()
    assert f"Epoch 0: Valid loss {record['valid']['loss']:0.4f}" in log
    assert f"Epoch 0: Best loss {record['valid']['loss']:0.4f}" in log
    assert "mlm_acc" in record["train"] and ("itm_acc" in record["train"]) == (stage == "sentence")
    state = torch.load(out / "LAST_LXRT.pth", map_location="cpu", weights_only=True)
    assert state["bert.embeddings.word_embeddings.weight"].shape[0] == \
        state["bert.word_embeddings.weight"].shape[0]  # the authors' visual-[CLS] table


def test_stages_chain_from_the_previous_last_weights(chain, root):
    config = LXRTConfig.from_json_file(root[1])
    model = LXRTPretraining(config)
    load_full(model, chain / "token" / "LAST")  # strict: every key, every shape
    log = (chain / "phrase" / "log.txt").read_text()
    assert "pre-training model:" in log and str(chain / "token" / "LAST_LXRT.pth") in log
    token = torch.load(chain / "token" / "LAST_LXRT.pth", weights_only=True)
    phrase = torch.load(chain / "phrase" / "LAST_LXRT.pth", weights_only=True)
    assert token.keys() == phrase.keys()
    assert not torch.equal(token["cls.seq_relationship_new.weight"],
                           phrase["cls.seq_relationship_new.weight"])  # TITP trained it


def test_vqa_fine_tunes_from_the_pretrained_checkpoint(chain, root, tmp_path):
    from tasks.vqa.main import main as vqa_main
    data, nodrop = root
    summary = vqa_main([*common_flags(data, tmp_path / "vqa", config=str(nodrop),
                                      load_lxmert=False),
                        "--loadLXMERTQA", str(chain / "sentence" / "BEST_EVAL_LOSS"),
                        "--train", "train", "--valid", "minival", "--batchSize", "16",
                        "--epochs", "1"])
    assert summary["best"] is not None
    log = (tmp_path / "vqa" / "log.txt").read_text()
    assert "BEST_EVAL_LOSS_LXRT.pth" in log


def test_resume_in_the_middle_of_a_stage_is_exact(root, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    pretrain_main(flags(root, full, "sentence", "--epochs", "2"))
    pretrain_main(flags(root, cut, "sentence", "--epochs", "2", "--stopAfterSteps", "12"))
    assert not (cut / "Epoch02_LXRT.pth").exists()
    pretrain_main(flags(root, cut, "sentence", "--epochs", "2", "--resume"))
    for name in ("LAST_LXRT.pth", "BEST_EVAL_LOSS_LXRT.pth", "Epoch01_LXRT.pth",
                 "Epoch02_LXRT.pth"):
        a = torch.load(full / name, weights_only=True)
        b = torch.load(cut / name, weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    ra, rb = read_metrics(full / "metrics.jsonl"), read_metrics(cut / "metrics.jsonl")
    assert ra[-1]["valid"] == rb[-1]["valid"] and ra[-1]["train"] == rb[-1]["train"]
    assert ra[-1]["best"] == rb[-1]["best"] and ra[-1]["best_epoch"] == rb[-1]["best_epoch"]


def test_a_task_starts_in_its_start_epoch_and_is_validated_throughout(root, tmp_path):
    """LXMERT's paper schedule (QA only in the last epochs) as a stage field: the first epoch
    trains without QA, the second with it; validation scores QA in both, so the losses that
    pick BEST_EVAL_LOSS stay comparable."""
    stage = json.loads((CONFIGS / "msp" / "sentence.json").read_text())
    stage["task_start_epochs"] = {"qa": 1}
    config = tmp_path / "late_qa.json"
    config.write_text(json.dumps(stage))
    argv = flags(root, tmp_path / "run", "sentence", "--epochs", "2")
    argv[argv.index("--stage") + 1] = str(config)
    pretrain_main(argv)
    first, second = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert "qa_loss" not in first["train"] and "qa_acc" not in first["train"]
    assert "mlm_loss" in first["train"] and second["train"]["qa_loss"] > 0
    assert "qa_loss" in first["valid"] and "qa_loss" in second["valid"]
    paper = json.loads((CONFIGS / "lxmert_pretrain_paper.json").read_text())
    code = json.loads((CONFIGS / "lxmert_pretrain.json").read_text())
    assert paper["task_start_epochs"] == {"qa": 10} and paper["epochs"] == code["epochs"] == 20
    assert {k: v for k, v in paper.items() if k not in ("_about", "name", "task_start_epochs")} \
        == {k: v for k, v in code.items() if k not in ("_about", "name")}


def test_resume_refuses_another_stage(root, tmp_path):
    out = tmp_path / "run"
    pretrain_main(flags(root, out, "token", "--stopAfterSteps", "2"))
    with pytest.raises(SystemExit, match="stage"):
        pretrain_main(flags(root, out, "phrase", "--resume"))


def test_grad_accumulation_matches_the_full_batch(root, tmp_path):
    """VQA's loss is a per-example mean, so two accumulated halves equal one full batch."""
    from tasks.vqa.main import main as vqa_main

    data, nodrop = root

    def run(name, *extra):
        vqa_main([*common_flags(data, tmp_path / name, config=str(nodrop)),
                  "--train", "train", "--valid", "", "--batchSize", "16", "--epochs", "1",
                  "--stopAfterSteps", "2", "--no-trimPadding", *extra])
        return torch.load(tmp_path / name / "resume.pth", weights_only=True)

    one, two = run("accum1"), run("accum2", "--gradAccum", "2")
    assert one["global_step"] == two["global_step"] == 2
    for key, value in one["model"].items():
        assert torch.allclose(value, two["model"][key], atol=1e-5, rtol=1e-4), key


def test_msp_launcher_chains_the_three_stages(root, tmp_path):
    import os
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo / "src"))
    data, nodrop = root
    cmd = ["bash", str(repo / "run" / "msp_pretrain.bash"), "cpu", "m", "--dataRoot", str(data),
           "--modelConfig", str(nodrop), "--numWorkers", "0",
           "--train", "mscoco_nominival", "--valid", "mscoco_minival", "--batchSize", "8",
           "--epochs", "1", "--seed", "1"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "snap" / "pretrain" / "m"
    for stage in STAGES:
        assert (out / stage / "LAST_LXRT.pth").is_file() and (out / stage / "stage_done").is_file()
    for stage, init in (("phrase", "token"), ("sentence", "phrase")):
        info = json.loads((out / stage / "run_info.json").read_text())
        assert info["args"]["init"] == f"snap/pretrain/m/{init}/LAST"
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and again.stdout.count("already finished") == 3


def test_two_process_ddp_with_grad_accumulation(root, tmp_path):
    """Two processes (gloo) build the caches once (rank 0 first), split each batch, accumulate
    gradients without all-reducing the first micro-batch, and write the checkpoints once."""
    import os
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[1]
    cache = tmp_path / "cache"  # fresh caches, so rank 0 really builds them
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tasks.pretrain.main"] + flags(root, tmp_path / "ddp", "sentence",
                                                "--gradAccum", "2", "--pretrainCache", str(cache))
    env = dict(os.environ, PYTHONPATH=str(repo / "src"), OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_metrics(tmp_path / "ddp" / "metrics.jsonl")[-1]
    assert math.isfinite(record["valid"]["loss"]) and record["train"]["matched_loss"] > 0
    assert (tmp_path / "ddp" / "BEST_EVAL_LOSS_LXRT.pth").is_file()
    assert len(list(cache.glob("corpus-*"))) == 2  # train and valid, built once each
    # the validation loss of two processes (16 examples per batch each) is that of one
    # process scoring the same weights 5 examples at a time
    again = validation_loss(flags(root, tmp_path / "one", "sentence",
                                  "--init", str(tmp_path / "ddp" / "LAST")), eval_batch=5)
    assert again == pytest.approx(record["valid"]["loss"], rel=1e-5)


def validation_loss(argv: list[str], eval_batch: int) -> float:
    """The validation loss of the weights --init names, scored in this process."""
    from tasks.common.trainer import Trainer
    from tasks.pretrain.main import build_parser, resolve_stage
    from tasks.pretrain.task import PretrainTask
    settings, stage = resolve_stage(build_parser(), argv + ["--evalBatchSize", str(eval_batch)])
    args = settings.args
    task = PretrainTask(args, stage)
    task.train_dataset()  # the replacement region features come from the training set
    trainer = Trainer(args, task)
    try:
        return trainer.task.evaluate(trainer.context(), trainer.prepare_model(), args.valid).score
    finally:
        trainer.close()


def test_validation_loss_is_the_whole_split_as_one_batch(chain, root, tmp_path):
    """Each loss is averaged over every item it labels in the split, whatever the evaluation
    batch: the same figure at 3, 7 and all examples per batch, and equal to the weighted
    losses of one forward pass over the whole split (LXMERT's loss with one batch)."""
    from tasks.pretrain.main import build_parser, resolve_stage
    from tasks.pretrain.task import PretrainTask, build_labels
    argv = flags(root, tmp_path / "v", "sentence", "--init", str(chain / "sentence" / "LAST"))
    settings, stage = resolve_stage(build_parser(), argv)
    args = settings.args
    task = PretrainTask(args, stage)
    task.train_dataset()
    valid = task.valid_dataset()
    batch = torch.utils.data.default_collate([valid[i] for i in range(len(valid))])
    model = task.build_model().eval()
    load_full(model, chain / "sentence" / "LAST")
    labels, present, positions = build_labels(batch, task.config.topic_size)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["token_position"], batch["input_mask"],
                    batch["feats"], batch["boxes"], labels=labels, mlm_positions=positions)
    whole = float((out.losses[0] * task.weights * present).sum())
    for size, name in ((3, "a"), (7, "b"), (len(valid), "c")):
        argv = flags(root, tmp_path / name, "sentence", "--init", str(chain / "sentence" / "LAST"))
        assert validation_loss(argv, size) == pytest.approx(whole, rel=1e-5), size


def test_a_loss_score_improves_downwards_and_reads_as_a_loss():
    from tasks.common.trainer import format_score, improves
    assert improves(6.6, -math.inf, None, is_loss=True)  # the first finite loss is the best
    assert not improves(float("nan"), -math.inf, None, is_loss=True)
    assert improves(5.0, 6.6, 0, is_loss=True) and not improves(7.0, 6.6, 0, is_loss=True)
    assert improves(0.7, 0.6, 0, is_loss=False) and not improves(0.5, 0.6, 0, is_loss=False)
    assert format_score(6.60791, True) == "loss 6.6079" and format_score(0.66084, False) == "66.08"


def test_micro_batches_cut_every_per_example_value():
    from tasks.common.batching import split_batch
    batch = {"index": torch.arange(8), "feats": torch.randn(8, 3, 2), "ids": list("abcdefgh"),
             "scalar": torch.tensor(1.0)}
    parts = split_batch(batch, 4)
    assert [p["index"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert torch.equal(torch.cat([p["feats"] for p in parts]), batch["feats"])
    assert parts[3]["ids"] == ["g", "h"] and all(p["scalar"] is batch["scalar"] for p in parts)
    assert split_batch(batch, 1) == [batch]


def test_grad_accum_must_divide_the_batch(root, tmp_path):
    with pytest.raises(SystemExit, match="--gradAccum 3 must divide"):
        pretrain_main(flags(root, tmp_path / "bad", "token", "--gradAccum", "3"))
    with pytest.raises(SystemExit, match="--gradAccum 0"):
        pretrain_main(flags(root, tmp_path / "bad0", "token", "--gradAccum", "0"))
