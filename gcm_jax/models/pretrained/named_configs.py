"""Choosing a port's architecture config among its named ones, checked against a checkpoint.

Shared by the audio encoder ports (whisper.py, wav2vec2.py): the config is the one asked for,
else the checkpoint's own metadata, else the only named config that fits the dims read from
its tensors; whichever it is must agree with those dims.
"""
from typing import Any, Mapping, Optional, TypeVar, Union

from gcm_jax import weights

Config = TypeVar("Config")


def name_of(configs: Mapping[str, Any], config: Any) -> str:
  """' (<name>)' of `config` among `configs`, or '' for an unnamed one."""
  names = [name for name, c in configs.items() if c == config]
  return f" ({names[0]})" if names else ""


def resolve(family: str, configs: Mapping[str, Config], found: Mapping[str, Any],
            size: Union[None, str, Config], metadata: Optional[Config], source: str,
            no_match_hint: str, metadata_name: str) -> Config:
  """The config of a checkpoint of `family` (e.g. 'Whisper').

  Args:
    configs: the port's named configs.
    found: {config field: value read from the tensors, or None if they do not show it}.
    size: a name of `configs`, a config, or None (then `metadata`, else the match).
    metadata: the checkpoint's own config (config.json, dims), or None.
    source: the checkpoint's path, for messages.
    no_match_hint: what else is missing when no named config matches and how to pass one.
    metadata_name: what the metadata is called in messages ("config.json", "dims").

  Raises:
    ValueError: `size` is an unknown name.
    weights.WeightImportError: no named config matches, or the config does not fit `found`
      or the metadata (every differing field listed).
  """
  shown = ", ".join(f"{k}={v}" for k, v in found.items() if v is not None)
  if isinstance(size, str):
    if size not in configs:
      raise ValueError(f"unknown {family} size {size!r}; expected one of {sorted(configs)} or "
                       f"a config")
    config = configs[size]
  elif size is not None:
    config = size
  elif metadata is not None:
    config = metadata
  else:
    matches = [c for c in configs.values()
               if all(v is None or getattr(c, k) == v for k, v in found.items())]
    if not matches:
      raise weights.WeightImportError(
          f"{source}: a {family} encoder with {shown} matches no named config "
          f"({sorted(configs)}) and {no_match_hint}")
    config = matches[0]
  wrong = [f"{k}: checkpoint {v}, config {getattr(config, k)}" for k, v in found.items()
           if v is not None and getattr(config, k) != v]
  if metadata is not None and metadata != config:
    wrong.append(f"the checkpoint's own {metadata_name} {metadata}")
  if wrong:
    raise weights.WeightImportError(
        f"{source}: the checkpoint holds a {family} encoder with {shown}, which does not fit "
        f"{config}{name_of(configs, config)}:\n" + "\n".join(f"  {line}" for line in wrong))
  return config
