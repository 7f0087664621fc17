"""The KL autoencoder's params: fresh ones, and the ones a training run saved.

A `python -m gcm_jax.train.train_autoencoder` workdir holds, once the run has finished:

  autoencoder_params/  the final EMA params (an Orbax folder, `runs.export`; runs of earlier
                       versions wrote `autoencoder.msgpack`, which still loads)
  autoencoder.json     {"config": AutoencoderConfig fields with the data's scaling_factor and
                        shift_factor, "step", "params": "ema", "params_file": the params' name}

`load_trained_autoencoder(workdir)` returns (AutoencoderConfig, params) for latent diffusion
and `autoencoder_identity(workdir)` a string that changes whenever those change (the key of
cached latents).
"""
import functools
import hashlib
import json
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from gcm_jax.models import autoencoder as ae
from gcm_jax.runs import export


PARAMS_FILE = "autoencoder_params"
AUTOENCODER_FILE = "autoencoder.json"


@functools.lru_cache(maxsize=None)
def _compiled_init(config: ae.AutoencoderConfig) -> Callable[[jax.Array], Any]:
  """The AutoencoderKL initializer compiled without XLA's backend optimizations: it runs once,
  and its ~60 unrolled threefry draws otherwise take 4x longer to compile on CPU."""
  f = config.downsampling  # The smallest frame: the params do not depend on the size.
  init = jax.jit(lambda key: ae.AutoencoderKL(config).init(
      key, jnp.zeros((1, 1, f, f, config.in_channels)))["params"])
  return init.lower(jax.ShapeDtypeStruct((2,), jnp.uint32)).compile(
      {"xla_backend_optimization_level": 0})


def init_params(config: ae.AutoencoderConfig, key: jax.Array) -> Any:
  """Freshly initialized AutoencoderKL params (compiled once per architecture).

  Args:
    key: a raw uint32 [2] PRNG key (`jax.random.PRNGKey`).
  """
  return _compiled_init(config)(key)


def _read_autoencoder_json(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, AUTOENCODER_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no trained autoencoder in {workdir!r} ({AUTOENCODER_FILE} missing: the run has not "
        f"finished); train one with python -m gcm_jax.train.train_autoencoder "
        f"--workdir={workdir}")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_trained_autoencoder(workdir: str) -> tuple[ae.AutoencoderConfig, dict[str, Any]]:
  """The autoencoder trained by `train_and_evaluate` in `workdir`.

  Returns:
    (config with the data's scaling_factor / shift_factor, params): the EMA params of the
    final checkpoint (`autoencoder_params/`, or an earlier version's `autoencoder.msgpack`), for
    `AutoencoderKL(config).apply({"params": params}, ...)` and `scale_latents(z, config)`.

  Raises:
    FileNotFoundError: no finished run in `workdir`.
    ValueError: the saved params do not fit the saved config (every mismatch named).
  """
  saved = _read_autoencoder_json(workdir)
  fields = dict(saved["config"], block_out_channels=tuple(saved["config"]["block_out_channels"]))
  config = ae.AutoencoderConfig(**fields)
  params = export.load_params(os.path.join(workdir, saved["params_file"]))
  expected = {jax.tree_util.keystr(p): x.shape for p, x in
              jax.tree_util.tree_leaves_with_path(ae.expected_params(config))}
  found = {jax.tree_util.keystr(p): x.shape for p, x in
           jax.tree_util.tree_leaves_with_path(params)}
  wrong = ([f"missing {k}" for k in sorted(set(expected) - set(found))]
           + [f"unexpected {k}" for k in sorted(set(found) - set(expected))]
           + [f"{k}: {found[k]}, expected {v}" for k, v in sorted(expected.items())
              if k in found and found[k] != v])
  if wrong:
    raise ValueError(f"{os.path.join(workdir, saved['params_file'])} does not fit the config in "
                     f"{AUTOENCODER_FILE}: " + "; ".join(wrong))
  return config, jax.tree.map(jnp.asarray, params)


def autoencoder_identity(workdir: str, params: Optional[Any] = None) -> str:
  """"own:<sha256>" of the trained autoencoder's saved config (with scale / shift) and param
  values; any change of either changes it (key for cached latents). `params`: the workdir's
  params if already loaded (`load_trained_autoencoder`), else they are read here."""
  saved = _read_autoencoder_json(workdir)
  digest = hashlib.sha256(json.dumps(dict(saved, params_file=None), sort_keys=True)
                          .encode("utf-8"))
  if params is None:
    params = load_trained_autoencoder(workdir)[1]
  digest.update(export.params_digest(params).encode("utf-8"))
  return f"own:{digest.hexdigest()}"
