"""A run's directory, the same for every model family that trains here:

  <workdir>/config.json   the run's resolved config, written once its state is restored or
                          initialized (so a refused resume never touches it)
  <workdir>/checkpoints/  Orbax checkpoints (`gcm_jax.runs.checkpoint`)
  <workdir>/data/         the dataset, when `config.data.data_dir` is empty

Rerunning a command with the same workdir resumes; `check_resumable` refuses a config whose
run-defining fields differ from the saved config.json (each family lists the fields that may
change, e.g. the number of steps or the mesh).
"""
import json
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import ml_collections

from gcm_jax import config_rules


CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
DATA_DIR = "data"


class ConfigMismatchError(ValueError):
  """A resumed workdir's saved config differs in fields that define the run."""


# Fields renamed since runs were saved: {section: {old name: new name}}. `read_config` gives
# every saved config the current names, so old runs resume and load.
RENAMED_FIELDS = {"pretrained": {f"whisper_{name}": f"audio_{name}"
                                 for name in ("path", "size", "context", "layers", "seed")}}


def read_config(workdir: str) -> Optional[dict]:
  """The workdir's config.json as a dict with the current field names (`RENAMED_FIELDS`), or
  None if it has none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    try:
      saved = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e})") from e
  for section, names in RENAMED_FIELDS.items():
    fields = saved.get(section)
    if isinstance(fields, dict):
      saved[section] = {names.get(k, k): v for k, v in fields.items()}
  return saved


def config_differences(saved: Mapping[str, Any], config: ml_collections.ConfigDict,
                       resumable_fields: Sequence[str]) -> dict[str, tuple[Any, Any]]:
  """{field: (saved value, new value)} for the fields that define the run and differ.

  `resumable_fields` may change (a prefix ending in "." covers a whole section). Fields the
  saved config does not have (added to gcm_jax after the run started) keep their defaults,
  which reproduce the earlier behaviour, and are not differences.
  """
  old = config_rules.flat_fields(saved)
  new = config_rules.flat_fields(json.loads(config.to_json()))
  resumable = lambda path: any(path == f or (f.endswith(".") and path.startswith(f))
                               for f in resumable_fields)
  return {path: (old[path], new.get(path, "<removed>")) for path in old
          if not resumable(path) and old[path] != new.get(path, "<removed>")}


def check_resumable(config: ml_collections.ConfigDict, workdir: str,
                    resumable_fields: Sequence[str], what: str = "a run") -> None:
  """Raises ConfigMismatchError naming each field that differs from the saved config
  (nothing to check in a workdir without one). `what` names the run in the message."""
  saved = read_config(workdir)
  differences = config_differences(saved, config, resumable_fields) if saved is not None else {}
  if differences:
    lines = "\n  ".join(f"config.{k}: saved {a!r}, now {b!r}"
                        for k, (a, b) in sorted(differences.items()))
    raise ConfigMismatchError(
        f"{workdir} holds {what} with a different config; nothing was changed there. "
        f"Use these values to resume it, or a new --workdir for the new config:\n  {lines}")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the run's config.json (process 0 of a multi-host run only)."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
      f.write(config.to_json(indent=2))


def with_data_dir(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """A copy of `config` whose empty `data.data_dir` is `<workdir>/data`."""
  config = ml_collections.ConfigDict(config.to_dict())
  if not config.data.data_dir:
    config.data.data_dir = os.path.join(workdir, DATA_DIR)
  return config
