"""``--config FILE`` recipes: flag values from a JSON/YAML file, per-stage sections, the command line overriding them.

:func:`load_recipe` reads the values for one stage; :func:`apply_recipe` checks each key and value against the
parser's flags (unknown keys with the closest names, wrong types, values outside the choices) and makes them the
parser's defaults.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
from typing import Any

STAGES = ("encoder", "diffusion")


def load_recipe(path: str, stage: str | None) -> dict[str, Any]:
    """Read a recipe file and return the flag values it sets for ``stage``.

    A recipe is a JSON object (or YAML mapping for ``.yaml``/``.yml`` files, when PyYAML is installed) whose keys
    are flag names without the leading dashes (``learning_rate``, ``train_batch_size``, ...). Optional sections
    ``"encoder"`` and ``"diffusion"`` hold the values of one stage; they override the top-level values, and the one
    used is chosen by ``--stage`` (on the command line or as a top-level ``"stage"`` key). Keys starting with ``_``
    (e.g. ``"_comment"``) are ignored.

    Raises:
        ValueError: unreadable file, not a mapping, or sections present but no stage chosen.
    """
    if not os.path.isfile(path):
        raise ValueError(f"--config {path!r} does not exist; pass the path of a recipe file (training/configs/*.json).")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as error:
            raise ValueError(
                f"--config {path!r} is YAML but PyYAML is not installed; pip install pyyaml or use JSON."
            ) from error
        try:
            recipe = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path!r} is not valid YAML: {error}") from error
    else:
        try:
            recipe = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {path!r} is not valid JSON: {error}") from error
    if not isinstance(recipe, dict):
        raise ValueError(f"--config {path!r} must hold a JSON object of flag values, got {type(recipe).__name__}.")

    sections = {name: recipe.get(name) for name in STAGES if name in recipe}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise ValueError(f"Section {name!r} of {path!r} must be an object of flag values, got {section!r}.")
    values = {k: v for k, v in recipe.items() if k not in STAGES and not k.startswith("_")}
    stage = stage or values.get("stage")
    if sections:
        if stage is None:
            raise ValueError(
                f"{path!r} has per-stage sections {sorted(sections)}; choose one with --stage "
                f"{'|'.join(STAGES)}."
            )
        if stage not in STAGES:
            raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}.")
        values.update({k: v for k, v in (sections.get(stage) or {}).items() if not k.startswith("_")})
    return {key.replace("-", "_"): value for key, value in values.items()}


def _check_value(action: argparse.Action, key: str, value: Any, path: str) -> Any:
    """Validate (and where needed convert) one recipe value the way argparse would treat the flag."""
    where = f"{key!r} in {path!r}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}.")
        return value
    if value is None:
        return None
    if action.type in (int, float):
        if isinstance(value, str):
            try:
                value = action.type(value)
            except ValueError as error:
                raise ValueError(f"{where} must be a number, got {value!r}.") from error
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}.")
        if action.type is int:
            if float(value) != int(value):
                raise ValueError(f"{where} must be an integer, got {value!r}.")
            value = int(value)
        else:
            value = float(value)
    elif not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}.")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where} is {value!r}; choose one of {', '.join(map(str, action.choices))}.")
    return value


def apply_recipe(parser: argparse.ArgumentParser, recipe: dict[str, Any], path: str) -> None:
    """``parser.set_defaults`` from a recipe after checking every key is a flag and every value fits it.

    Raises:
        ValueError: an unknown key (with the closest flag names) or a value of the wrong type / not in the choices.
    """
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}
    unknown = [key for key in recipe if key not in actions]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, actions, n=2)
            hints.append(f"{key!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        raise ValueError(
            f"{path!r} sets unknown option(s) {', '.join(hints)}. Recipe keys are the flag names of "
            "training/train.py without dashes; see `python training/train.py --help`."
        )
    parser.set_defaults(**{key: _check_value(actions[key], key, value, path) for key, value in recipe.items()})
