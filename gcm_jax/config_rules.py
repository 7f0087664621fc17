"""Config checks shared by every entry point: field rules, one error listing every problem,
and the `--config` flag with a clear line for an override that names no field.

A `Rule` says what the field at a dotted path must hold (`integer("train.num_steps", 1)`);
`field_problems(config, rules, config_file)` lists every unknown, missing and invalid field.
Each model family's entry point keeps its own table of rules (`config_validation.RULES` for the
diffusion model, `train_autoencoder.RULES`, ...) and raises one `ConfigError`.
"""
import dataclasses
import math
import os
import runpy
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections
from ml_collections import config_flags

from gcm_jax import configs


class ConfigError(ValueError):
  """The config has invalid or unknown fields; the message lists every one."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """`ok(value)` must hold for the field at `path` (e.g. "sampling.num_steps")."""
  path: str
  ok: Callable[[Any], bool]
  expected: str


def is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def one_of(path: str, choices: Iterable[Any]) -> Rule:
  choices = tuple(choices)
  return Rule(path, lambda v: v in choices, f"one of {choices}")


def integer(path: str, minimum: int) -> Rule:
  return Rule(path, lambda v: is_int(v) and v >= minimum, f"an integer >= {minimum}")


def number(path: str, low: float = -math.inf, high: float = math.inf,
           low_open: bool = False, high_open: bool = False) -> Rule:
  """A number in [low, high] (or open at either end)."""
  def ok(v):
    return (is_number(v) and (v > low if low_open else v >= low)
            and (v < high if high_open else v <= high))
  interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
  return Rule(path, ok, f"a number in {interval}")


def boolean(path: str) -> Rule:
  return Rule(path, lambda v: isinstance(v, bool), "True or False")


def text(path: str) -> Rule:
  return Rule(path, lambda v: isinstance(v, str), "a string")


def probability(path: str) -> Rule:
  return number(path, 0.0, 1.0)


def positive(path: str) -> Rule:
  return number(path, 0.0, low_open=True)


def non_negative(path: str) -> Rule:
  return number(path, 0.0)


def int_tuple(path: str, minimum: int = 1) -> Rule:
  """A non-empty tuple (or list) of integers >= `minimum`."""
  def ok(v):
    return isinstance(v, (tuple, list)) and len(v) > 0 and all(
        is_int(c) and c >= minimum for c in v)
  return Rule(path, ok, f"a non-empty tuple of integers >= {minimum}")


def flat_fields(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{dotted path: value} of the fields of a nested config dict (`mesh.shape`, a dict of
  axis sizes, counts as one field)."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping) and path != "mesh.shape":
      flat.update(flat_fields(value, path + "."))
    else:
      flat[path] = value
  return flat


def field_problems(config: ml_collections.ConfigDict, rules: Sequence[Rule],
                   config_file: str) -> list[str]:
  """One line per unknown, missing or invalid field of `config` under `rules` (unknown
  fields point at `config_file`, the config that lists them all)."""
  fields = flat_fields(config.to_dict())
  known = {r.path for r in rules}
  found = [f"config.{p} is not a known field (check its spelling; the fields are those of "
           f"{config_file})" for p in fields if p not in known]
  for rule in rules:
    if rule.path not in fields:
      found.append(f"config.{rule.path} is missing: expected {rule.expected}")
    elif not rule.ok(fields[rule.path]):
      found.append(f"config.{rule.path} = {fields[rule.path]!r}: expected {rule.expected}")
  return found


def unknown_override(config: ml_collections.ConfigDict, override: str) -> str | None:
  """Why a `--config.a.b=...` command-line override names no field of `config`, or None."""
  node, walked = config, "config"
  for key in override.split("=", 1)[0].removeprefix("--config.").split("."):
    if not isinstance(node, (Mapping, ml_collections.ConfigDict)) or key not in node:
      fields = ", ".join(sorted(node.keys())) if isinstance(
          node, (Mapping, ml_collections.ConfigDict)) else "none: it is a value"
      return f"{walked} has no field {key!r} (its fields: {fields})"
    node, walked = node[key], f"{walked}.{key}"
  return None


def _exit_for_unknown_overrides(argv: Sequence[str], default_config_path: str,
                                error: Exception) -> None:
  """Raises SystemExit naming the `--config.*` overrides of `argv` that match no field."""
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")),
              default_config_path)
  config = runpy.run_path(path.split(":", 1)[0])["get_config"]()
  reasons = [r for a in argv if a.startswith("--config.") if (r := unknown_override(config, a))]
  raise SystemExit("error: " + ("; ".join(reasons) or f"bad --config override ({error})")
                   ) from None


def config_file(value: str) -> str:
  """A `--config` value with its file resolved: a path as given, or the name of a config
  installed with the package (`quick_start`, `autoencoder`, ...; `gcm_jax/configs/`), with
  any `:arg` kept."""
  name, colon, arg = value.partition(":")
  installed = os.path.join(configs.FOLDER, f"{name}.py")
  if not os.path.exists(name) and os.sep not in name and os.path.exists(installed):
    return installed + colon + arg
  return value


def define_config_flag(default_config_path: str, help_text: str = "Experiment config."):
  """`config_flags.DEFINE_config_file("config", ...)`, ending with one clear error line if a
  command-line override names an unknown field (ml_collections already applies overrides
  to the default config here, at definition time). The default and a `--config=` on the
  command line may name an installed config (`config_file`)."""
  sys.argv[1:] = [f"--config={config_file(a.split('=', 1)[1])}" if a.startswith("--config=")
                  else a for a in sys.argv[1:]]
  default_config_path = config_file(default_config_path)
  try:
    return config_flags.DEFINE_config_file("config", default_config_path, help_text)
  except (AttributeError, KeyError) as e:
    _exit_for_unknown_overrides(sys.argv, default_config_path, e)


def config_flags_parser(flag_values, default_config_path: str) -> Callable[[list[str]], list[str]]:
  """An absl `flags_parser` that turns an override of an unknown config field into one clear
  error line instead of ml_collections' bare AttributeError."""
  default_config_path = config_file(default_config_path)

  def parse(argv: list[str]) -> list[str]:
    try:
      return flag_values(argv)
    except (AttributeError, KeyError) as e:
      _exit_for_unknown_overrides(argv, default_config_path, e)

  return parse
