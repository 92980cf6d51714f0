"""One home per setting: defaults < recipe (or stage file) < command line, each value's source in
run_info.json, a log line when the command line overrides a recipe, and launchers that pass
only what differs from the defaults."""
import json
import os
import subprocess

import pytest

from generated import ROOT, common_flags
from tasks.common.settings import COMMAND_LINE, DEFAULT, resolve_settings
from tasks.pretrain.main import build_parser as pretrain_parser
from tasks.pretrain.main import resolve_stage
from tasks.vqa.main import build_parser as vqa_parser
from tasks.vqa.main import main as vqa_main

RECIPES = {"mine": {"lr": 1e-4, "train": "train,nominival", "load_lxmert": "data/model"}}


def test_a_default_stays_a_default():
    settings = resolve_settings(vqa_parser(), [], RECIPES)
    assert settings.args.lr == 5e-5 and settings.sources["lr"] == DEFAULT
    assert settings.args.llayers == 0 and settings.args.xlayers == 5
    assert not settings.overrides


def test_a_recipe_beats_the_defaults():
    settings = resolve_settings(vqa_parser(), ["--recipe", "mine"], RECIPES)
    assert (settings.args.lr, settings.args.train) == (1e-4, "train,nominival")
    assert settings.sources["lr"] == settings.sources["train"] == "recipe mine"
    assert settings.sources["epochs"] == DEFAULT and settings.sources["recipe"] == COMMAND_LINE
    assert not settings.overrides


def test_the_command_line_beats_the_recipe_and_says_so():
    argv = ["--recipe", "mine", "--lr", "3e-4", "--train", "train,nominival", "--epochs", "2"]
    settings = resolve_settings(vqa_parser(), argv, RECIPES)
    assert (settings.args.lr, settings.args.epochs) == (3e-4, 2)
    assert settings.sources["lr"] == settings.sources["epochs"] == COMMAND_LINE
    # only a value that differs from the recipe's is an override worth a log line
    assert settings.overrides == ["--lr 0.0003 from the command line overrides recipe mine's "
                                  "0.0001"]
    assert settings.sources["load_lxmert"] == "recipe mine"


def test_the_command_line_beats_a_default_too():
    settings = resolve_settings(vqa_parser(), ["--batch-size", "8"], RECIPES)
    assert settings.args.batch_size == 8 and settings.sources["batch_size"] == COMMAND_LINE


def test_a_recipe_file_names_settings_by_flag_or_by_name(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"batchSize": 16, "clip_norm": 1.0, "--fromScratch": True,
                                "precision": "bf16"}))
    settings = resolve_settings(vqa_parser(), ["--recipe", str(path), "--batchSize", "4"], {})
    args = settings.args
    assert (args.batch_size, args.clip_norm, args.from_scratch, args.precision) == (
        4, 1.0, True, "bf16")
    assert settings.sources["clip_norm"] == f"recipe file {path}"
    assert settings.overrides == [f"--batchSize 4 from the command line overrides recipe file "
                                  f"{path}'s 16"]


@pytest.mark.parametrize("content,message", [
    ({"batchsize": 8}, "unknown setting 'batchsize'"),
    ({"batchSize": "8"}, "batchSize = '8': expected a number"),
    ({"batchSize": 8.5}, "expected an integer"),
    ({"precision": "fp8"}, "expected one of"),
    ({"fromScratch": 1}, "expected true or false"),
    ([1, 2], "expected a JSON object of settings"),
])
def test_bad_recipe_files_are_refused_naming_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SystemExit, match=message) as err:
        resolve_settings(vqa_parser(), ["--recipe", str(path)], {})
    assert str(path) in str(err.value)


def test_an_unknown_recipe_names_the_known_ones():
    with pytest.raises(SystemExit, match="--recipe nope: neither a recipe.*vqa_finetune"):
        resolve_settings(vqa_parser(), ["--recipe", "nope"],
                         {"vqa_finetune": {}, "vqa_test": {}})


def test_the_stage_file_sits_between_the_defaults_and_the_command_line(tmp_path):
    stage = tmp_path / "stage.json"
    stage.write_text(json.dumps({"tasks": ["mlm"], "lr": 3e-4, "epochs": 3}))
    settings, config = resolve_stage(pretrain_parser(), ["--stage", str(stage), "--epochs", "5"])
    args, sources = settings.args, settings.sources
    assert (args.lr, args.epochs, args.batch_size, args.warmup) == (3e-4, 5, 256, 0.05)
    assert sources["lr"] == f"stage file {stage}" and sources["epochs"] == COMMAND_LINE
    assert sources["batch_size"] == sources["warmup"] == DEFAULT  # LXMERT's, not in the file
    assert settings.overrides == [f"--epochs 5 from the command line overrides stage file "
                                  f"{stage}'s 3"]
    assert (config.lr, config.epochs, config.batch_size) == (3e-4, 5, 256)  # one value each
    with pytest.raises(SystemExit, match="recipe from the stage file"):
        resolve_stage(pretrain_parser(), ["--recipe", "x"])


@pytest.mark.slow
def test_run_info_records_each_source_and_the_log_the_override(small_root, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"train": "train", "valid": "minival", "batchSize": 16,
                                  "lr": 1e-3}))
    out = tmp_path / "run"
    vqa_main(common_flags(small_root, out) + ["--recipe", str(recipe), "--epochs", "1",
                                              "--lr", "2e-3"])
    info = json.loads((out / "run_info.json").read_text())
    assert info["args"]["batch_size"] == 16 and info["args"]["lr"] == 2e-3
    assert info["sources"]["batch_size"] == info["sources"]["train"] == f"recipe file {recipe}"
    assert info["sources"]["lr"] == info["sources"]["epochs"] == COMMAND_LINE
    assert info["sources"]["clip_norm"] == DEFAULT
    assert set(info["sources"]) == set(info["args"])
    assert (f"--lr 0.002 from the command line overrides recipe file {recipe}'s 0.001"
            in (out / "log.txt").read_text())


def test_a_call_with_nothing_to_do_is_refused(small_root, tmp_path):
    with pytest.raises(SystemExit, match="nothing to do: give --train"):
        vqa_main(common_flags(small_root, tmp_path / "idle") + ["--train", "", "--valid", ""])
    assert not (tmp_path / "idle").exists()


AUTHORS_VQA = ["--train", "train,nominival", "--valid", "minival", "--llayers", "0",
               "--xlayers", "5", "--rlayers", "0", "--loadLXMERT", "data/model", "--batchSize",
               "32", "--optim", "bert", "--lr", "5e-5", "--epochs", "6"]


def test_a_launcher_recipe_gives_the_authors_command_line(tmp_path):
    """run/vqa_finetune.bash passes only `--recipe vqa_finetune`; the run is the one the
    authors' explicit flags describe."""
    env = dict(os.environ, LXRT_DRY_RUN="1")
    done = subprocess.run(["bash", str(ROOT / "run" / "vqa_finetune.bash"), "cpu", "x"],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    argv = done.stdout.split("python -m tasks.vqa.main ", 1)[1].split()
    assert "--recipe" in argv and "--xlayers" not in argv
    from tasks.common.settings import parse_settings
    launched = vars(parse_settings(vqa_parser(), argv, "tasks.vqa").args)
    rest = [a for a in argv if a not in ("--recipe", "vqa_finetune")]  # --tqdm --output ...
    authors = vars(vqa_parser().parse_args(AUTHORS_VQA + rest))
    assert {k: v for k, v in launched.items() if k != "recipe"} == \
        {k: v for k, v in authors.items() if k != "recipe"}
