"""tools.easyvqa_pretrain: the commands of the easy-VQA proof and ablation (LXRT_DRY_RUN), and
its job scheduling. No run is started."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tasks.pretrain.main import build_parser, resolve_stage
from tasks.pretrain.stage import load_stage_config
from tools import easyvqa_pretrain as driver

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dry(tmp_path, monkeypatch):
    """A data root with the two few-label splits (their sizes set the fine-tuning epochs), a
    working directory, and LXRT_DRY_RUN."""
    data = tmp_path / "data"
    (data / "easyvqa").mkdir(parents=True)
    for percent, n in (("1", 333), ("5", 1658)):
        (data / "easyvqa" / f"train_{percent}pct.json").write_text(json.dumps([{}] * n))
    monkeypatch.setenv("LXRT_DRY_RUN", "1")
    monkeypatch.setenv("LXRT_DATA_ROOT", str(data))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def commands(capfd, argv) -> tuple[list, list]:
    assert driver.main(argv) == 0
    lines = capfd.readouterr().out.splitlines()
    pretrain = [shlex.split(line.split("python -m tasks.pretrain.main", 1)[1])
                for line in lines if "tasks.pretrain.main" in line]
    finetune = [line for line in lines if "tasks.vqa.main" in line]
    return pretrain, finetune


def resolved(argv: list) -> tuple:
    settings, stage = resolve_stage(build_parser(), argv)
    return settings.args, stage


def test_the_ablation_gives_every_arm_the_same_steps_and_data(dry, capfd):
    pretrain, finetune = commands(capfd, ["ablation", "cpu", "abl"])
    runs = {}
    for argv in pretrain:
        assert not {"--batchSize", "--lr", "--epochs", "--warmup"} & set(argv)  # the JSON's
        args, stage = resolved(argv)
        runs[Path(args.output).name] = (args, stage)
    assert len(runs) == len(pretrain) == 11  # the shared token and phrase stages run once
    experiment = driver.ablation()
    epochs, data = set(), set()
    for arm, chain in experiment.arms.items():
        if not chain or arm in experiment.optional:
            continue
        stages = [runs[stage.folder] for stage in chain]
        epochs.add(sum(args.epochs for args, _ in stages))
        data |= {(args.train, args.valid, args.image_limit, args.batch_size,
                  tuple(stage.sentence_sources)) for args, stage in stages}
        tasks = [set(stage.tasks) for _, stage in stages]
        removed = {"no_ifrs": "ifrs", "no_titp": "topic", "no_itm_hs": "itm_hs",
                   "no_tits": "topic"}.get(arm)
        if removed:  # the one stage that lost its task
            full = [set(runs[s.folder][1].tasks) for s in experiment.arms["msp"]]
            assert sum(t != f for t, f in zip(tasks, full)) == 1
            assert any(f - t == {removed} for t, f in zip(tasks, full))
        for args, stage in stages:  # never an answer: captions only, no QA
            assert not stage.has("qa") and stage.sentence_sources == ["captions"]
    assert epochs == {11} and len(data) == 1  # 11 epochs of the same captions for every arm
    assert len(finetune) == 7 * 2 * 3 * 2  # arms x percents x seeds x (train, test)
    # per fraction and seed every arm gets the same fine-tuning flags but its weights
    recipes: dict = {}
    for line in finetune:
        argv = shlex.split(line.split("python -m tasks.vqa.main", 1)[1])
        if "--test" in argv:
            continue
        for flag, width in (("--fromScratch", 1), ("--loadLXMERT", 2), ("--output", 2)):
            if flag in argv:
                del argv[argv.index(flag):argv.index(flag) + width]
        recipes.setdefault(argv[argv.index("--train") + 1] + argv[argv.index("--seed") + 1],
                           set()).add(tuple(argv))
    assert len(recipes) == 6 and all(len(r) == 1 for r in recipes.values())


def test_the_optional_arms_undo_one_reconstruction_choice_each(dry, capfd):
    pretrain, finetune = commands(capfd, ["ablation", "cpu", "abl", "--arms",
                                          "token_words,text_topic"])
    runs = {Path(resolved(a)[0].output).name: resolved(a) for a in pretrain}
    assert sorted(runs) == ["phrase", "text_topic_sentence", "token", "token_words_phrase",
                            "token_words_sentence", "token_words_token"]
    token, sentence = runs["token_words_token"][1], runs["text_topic_sentence"][1]
    assert (token.text_unit, sentence.mismatched_topic) == ("token", "text")
    msp = {s.folder: driver.load_stage_config(driver.CONFIGS / s.config) for s in
           driver.ablation().arms["msp"]}
    differ = lambda a, b: {k for k, v in a.to_dict().items() if v != getattr(b, k)}
    assert differ(token, msp["token"]) == {"text_unit"}
    assert differ(sentence, msp["sentence"]) == {"mismatched_topic"}
    assert len(finetune) == 3 * 2 * 3 * 2
    assert not (dry / "snap" / "easyvqa_pretrain" / "abl" / "plan.json").exists()  # dry run


def test_the_proof_passes_only_what_differs_from_the_stage_configs(dry, capfd):
    cpu, _ = commands(capfd, ["proof", "cpu", "p"])
    assert driver.main(["proof", "0", "p"]) == 0
    out = capfd.readouterr().out
    assert "stage token: batch_size 256 (its config: 64)" in out  # said, never silent
    gpu = [shlex.split(line.split("python -m tasks.pretrain.main", 1)[1])
           for line in out.splitlines() if "tasks.pretrain.main" in line]
    assert len(cpu) == len(gpu) == 4
    for a, b in zip(cpu, gpu):
        assert not {"--batchSize", "--lr", "--epochs"} & set(a)
        args, _ = resolved(b)
        config = load_stage_config(args.stage)  # the file's values; the stage holds the run's
        assert (args.batch_size, args.lr) == (256, 1e-4) and args.epochs != config.epochs


def test_the_jobs_run_after_the_stage_they_start_from(tmp_path):
    order = []

    class Recorder(driver.Job):
        def run(self):
            order.append(self.name)
            self.done.touch()

    def job(name, *after, rank=0):
        return Recorder(name, [], tmp_path / name, list(after), rank=rank)

    jobs = [job("token"), job("scratch"), job("phrase", "token"), job("ft", "phrase")]
    (tmp_path / "scratch").touch()  # finished before: skipped
    driver.run_jobs(jobs, parallel=2)
    assert order.index("token") < order.index("phrase") < order.index("ft")
    assert "scratch" not in order
    jobs = [job("late", rank=2), job("early_a", rank=0), job("wait", "token", rank=0),
            job("early_b", rank=1)]
    names = {j.name for j in jobs} | {"token"}
    assert [j.name for j in driver.ready_jobs(jobs, set(), names, 2)] == \
        ["early_a", "early_b", "late"]  # the earlier arms first when several run at a time
    assert [j.name for j in driver.ready_jobs(jobs, {"token"}, names, 1)] == \
        ["late", "early_a", "wait", "early_b"]  # one at a time: the list order


def test_an_interrupted_run_is_resumed(dry, capfd):
    stage = dry / "snap" / "easyvqa_pretrain" / "p" / "pretrain" / "token"
    stage.mkdir(parents=True)
    (stage / "resume.pth").write_bytes(b"")
    pretrain, _ = commands(capfd, ["proof", "cpu", "p"])
    assert ["--resume" in argv for argv in pretrain] == [True, False, False, False]


def test_bad_arguments_are_refused(dry):
    for argv, message in ((["proof", "gpu0", "x"], "first argument"),
                          (["proof", "cpu", "a/b"], "plain directory"),
                          (["ablation", "cpu", "x", "--arms", "msp,nope"], "nope")):
        with pytest.raises(SystemExit) as info:
            driver.main(argv)
        assert info.value.code != 0


def test_the_plan_keeps_the_arms_of_earlier_calls(tmp_path):
    experiment = driver.ablation()
    for arms in (["scratch", "msp"], ["scratch", "text_topic"]):
        part = driver.Experiment("ablation", {a: experiment.arms[a] for a in arms})
        driver.Plan(part, "cpu", tmp_path, "data", ["1"], ["1"], []).write_plan()
    plan = json.loads((tmp_path / "plan.json").read_text())["arms"]
    assert plan == {"scratch": [], "msp": ["token", "phrase", "sentence"],
                    "text_topic": ["token", "phrase", "text_topic_sentence"]}
