"""One home per setting: every run's settings come from one resolver, in a fixed order.

A setting's value is, from weakest to strongest:
  1. its flag's default (`tasks.common.args` and the task's `main.py`),
  2. a recipe: `--recipe NAME` (one of the recipes the task's registry entry declares, which
     its launchers use), `--recipe FILE.json` (an object of settings, named by their flag,
     e.g. "batchSize", or by their name in the code, "batch_size"), or pre-training's stage
     file (`--stage`: its epochs, lr, batch size, warmup and corpora),
  3. the command line.
`Settings.sources` says where each value came from (run_info.json records it beside the
values) and `Settings.overrides` lists each recipe value that the command line overrode (the
run's log says so).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lxrt.jsonfile import read_json
from tasks.common import registry
from tasks.common.args import validate_args

DEFAULT = "default"
COMMAND_LINE = "command line"


@dataclass
class Settings:
    args: argparse.Namespace
    sources: dict = field(default_factory=dict)     # setting -> where its value came from
    overrides: list = field(default_factory=list)   # "the command line overrides ..." lines

    @classmethod
    def given(cls, args: argparse.Namespace, source: str = "set by the caller") -> "Settings":
        """Settings made without the resolver (a Namespace built in code): one source."""
        return cls(args, {dest: source for dest in vars(args)})


def command_line_settings(parser: argparse.ArgumentParser, argv: list) -> set:
    """The settings that `argv` itself sets (parsed with every default suppressed)."""
    actions = [(action, action.default) for action in parser._actions]
    defaults = dict(parser._defaults)
    try:
        for action, _ in actions:
            action.default = argparse.SUPPRESS
        parser._defaults.clear()
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in actions:
            action.default = default
        parser._defaults.update(defaults)


def read_recipe(name: str, recipes: dict) -> tuple[str, dict]:
    """(label, settings) of `--recipe NAME`: a recipe of `recipes`, else a JSON file."""
    if name in recipes:
        return f"recipe {name}", dict(recipes[name])
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"--recipe {name}: neither a recipe of this entry point "
                         f"({', '.join(sorted(recipes)) or 'it declares none'}) nor a JSON "
                         f"file of settings")
    values = read_json(path, error=SystemExit)
    if not isinstance(values, dict):
        raise SystemExit(f"--recipe {path}: expected a JSON object of settings, e.g. "
                         f'{{"batchSize": 32, "lr": 5e-5}}')
    return f"recipe file {path}", values


def _action_of(parser: argparse.ArgumentParser, key: str, label: str) -> argparse.Action:
    by_dest = {a.dest: a for a in parser._actions if a.option_strings}
    flag = key if key.startswith("-") else f"--{key}"
    action = by_dest.get(key) or parser._option_string_actions.get(flag)
    if action is None or action.dest in ("help", "recipe"):
        raise SystemExit(f"{label}: unknown setting {key!r}; settings are named by their flag "
                         f"(batchSize) or their name in the code (batch_size)")
    return action


def _checked(action: argparse.Action, value, label: str, key: str):
    """`value` as the flag's own parsing would give it; errors name the recipe and the key."""
    def fail(expected):
        raise SystemExit(f"{label}: {key} = {value!r}: expected {expected}")

    takes_no_value = action.nargs == 0
    if takes_no_value or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            fail("true or false")
        if takes_no_value and value != bool(action.const):
            fail(f"{str(bool(action.const)).lower()} (the flag only switches it on)")
        return value
    if value is None:
        return None
    kind = action.type or str
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        fail(f"a number ({kind.__name__})")
    if kind is int and value != int(value):
        fail("an integer")
    if kind is str and not isinstance(value, str):
        fail("a string")
    value = kind(value)
    if action.choices is not None and value not in action.choices:
        fail(f"one of {list(action.choices)}")
    return value


def _flag(action: argparse.Action) -> str:
    return action.option_strings[0]


def resolve_settings(parser: argparse.ArgumentParser, argv: Optional[list],
                     recipes: Optional[dict] = None,
                     recipe: Optional[tuple[str, dict]] = None) -> Settings:
    """Parse `argv` (None: sys.argv[1:]) with `parser` and put the recipe between the
    defaults and the command line: `recipe` (label, settings) when given, else `--recipe`
    looked up in `recipes`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    given = command_line_settings(parser, argv)
    settings = Settings(args, {dest: COMMAND_LINE if dest in given else DEFAULT
                               for dest in vars(args)})
    if recipe is None and getattr(args, "recipe", None):
        recipe = read_recipe(args.recipe, recipes or {})
    if recipe is None:
        return settings
    label, values = recipe
    for key, value in values.items():
        action = _action_of(parser, key, label)
        value = _checked(action, value, label, key)
        if action.dest in given:
            mine = getattr(args, action.dest)
            if mine != value:
                settings.overrides.append(
                    f"{_flag(action)} {mine!r} from the command line overrides {label}'s "
                    f"{value!r}")
            continue
        setattr(args, action.dest, value)
        settings.sources[action.dest] = label
    return settings


def parse_settings(parser: argparse.ArgumentParser, argv: Optional[list],
                   folder: str) -> Settings:
    """A fine-tuning entry point's settings: defaults, then a recipe of the tasks whose entry
    point is `folder`.main, then the command line; every value checked (validate_args)."""
    settings = resolve_settings(parser, argv, registry.recipes_of(folder))
    validate_args(settings.args)
    return settings
