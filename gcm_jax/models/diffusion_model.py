"""The diffusion model a run config describes, and the trained one in a run directory.

  make_apply_fn(config)       the network `(params, x_t, t, cond) -> output`: the STDiT, or
                              for a ControlNet run the frozen STDiT steered by its branch
  init_fn(config)             `(key, base_params=None) -> TrainState` (logically boxed params)
  state_shardings(config, m)  the abstract TrainState and its NamedShardings on mesh `m`
  restore_ema_params(...)     the EMA params of a checkpoint of a run directory
  load_trained(workdir)       a `TrainedModel` (config, apply_fn, EMA params) ready to sample

Training (`gcm_jax.train.trainer`) and inference (`gcm_jax.generate`, `gcm_jax.evaluate`)
build the model here, so both read a checkpoint the same way.
"""
import dataclasses
import os
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gcm_jax import frozen_encoders
from gcm_jax import latents
from gcm_jax.models import control
from gcm_jax.models import stdit
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import directory
from gcm_jax.runs import state as state_lib


ApplyFn = Callable[[Any, jax.Array, jax.Array, Mapping[str, jax.Array]], jax.Array]


def make_model(config: ml_collections.ConfigDict) -> stdit.STDiT:
  return stdit.STDiT(**config.model.to_dict())


def model_apply_fn(model: stdit.STDiT) -> ApplyFn:
  """`(params, x_t, t, cond) -> output` for a plain STDiT."""
  return lambda params, x, t, cond: model.apply({"params": params}, x, t, cond)


def make_apply_fn(config: ml_collections.ConfigDict) -> ApplyFn:
  """The run's network `(params, x_t, t, cond) -> output`: the STDiT, or for a ControlNet
  run the frozen STDiT steered by its control branch."""
  if control.enabled(config):
    return control.controlled_apply_fn(make_model(config), control.make_branch(config))
  return model_apply_fn(make_model(config))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`config.train`'s optimizer; a ControlNet run's freezes the base params."""
  return state_lib.make_optimizer(config.train,
                                  control.param_labels if control.enabled(config) else None,
                                  scanned_key=stdit.SCANNED_BLOCKS)


def example_inputs(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, Any]:
  """Zero-valued model inputs with the config's shapes (for init and shape inference);
  a ControlNet run's cond also has zero control maps `[B, T, R, R, config.control.channels]`,
  a run with pretrained encoders their features (`frozen_encoders`, loaded once here)."""
  t, r = config.data.num_frames, config.data.resolution
  m = config.model
  b = batch_size
  x_shape = latents.diffusion_shape(config, b, t)
  control_maps = {k: jnp.zeros((b, t, r, r, config.control.channels), jnp.float32)
                  for k in control.batch_keys(config)}
  pretrained = {k: jnp.zeros((b,) + shape, bool if k.endswith("mask") else jnp.float32)
                for k, shape in frozen_encoders.FrozenEncoders(config).feature_shapes(t).items()}
  identity = {}
  if m.get("reference_frames", 0):
    identity.update(reference=jnp.zeros((b, m.reference_frames) + x_shape[2:], jnp.float32),
                    drop_reference=jnp.zeros((b,), bool))
  if m.get("masked_source", False):
    identity.update(source=jnp.zeros(x_shape, jnp.float32),
                    source_mask=jnp.zeros(x_shape[:4] + (1,), jnp.float32))
  return {
      "x": jnp.zeros(x_shape, jnp.float32),
      "t": jnp.zeros((b,), jnp.float32),
      "cond": {
          "text_tokens": jnp.zeros((b, m.text_max_len), jnp.int32),
          "text_mask": jnp.ones((b, m.text_max_len), bool),
          "mel": jnp.zeros((b, t, m.mel_window, m.num_mels), jnp.float32),
          "drop_text": jnp.zeros((b,), bool),
          "drop_audio": jnp.zeros((b,), bool),
          "frames": jnp.zeros(x_shape, jnp.float32),
          "frame_mask": jnp.zeros((b, t), bool),
          **control_maps,
          **pretrained,
          **identity,
      },
  }


def init_fn(config: ml_collections.ConfigDict
            ) -> Callable[[jax.Array, Optional[Any]], state_lib.TrainState]:
  """`(key, base_params=None) -> TrainState` with logically boxed (nn.Partitioned) params.

  A ControlNet run's params are `control.init_params` of `base_params` (the trained base;
  None: a fresh base init, for shapes and shardings only); a plain run ignores `base_params`.
  """
  model = make_model(config)
  optimizer = make_optimizer(config)
  inputs = example_inputs(config, batch_size=1)
  init_model = lambda key: model.init(key, inputs["x"], inputs["t"], inputs["cond"])["params"]

  def init(key, base_params=None):
    if not control.enabled(config):
      return state_lib.create_state(init_model(key), optimizer)
    k_base, k_control = jax.random.split(key)
    base_params = init_model(k_base) if base_params is None else base_params
    params = control.init_params(control.make_branch(config), k_control, inputs, base_params)
    return state_lib.create_state(params, optimizer)

  return init


def state_shardings(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                    ) -> tuple[state_lib.TrainState, Any]:
  """(abstract TrainState of ShapeDtypeStructs, its NamedShardings on `mesh`); no FLOPs."""
  abstract = jax.eval_shape(init_fn(config), jax.random.PRNGKey(config.seed))
  shardings = mesh_lib.logical_shardings(abstract, mesh, config.mesh.logical_axis_rules)
  return nn.meta.unbox(abstract), shardings


def restore_ema_params(workdir: str, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh, step: Optional[int] = None) -> tuple[Any, int]:
  """(EMA params, step) of the run in `workdir` (`config`: its config) on `mesh`, from the
  checkpoint at `step`, by default the newest readable one (newer unreadable ones are
  reported in a warning and left in place)."""
  abstract_state, shardings = state_shardings(config, mesh)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, directory.CHECKPOINT_DIR),
                                             config.checkpoint)
  abstract = checkpoint_lib.abstract_with_shardings(abstract_state, shardings)
  if step is None:
    state, _, step = checkpoint_lib.restore_newest(checkpointer, abstract, set_aside=False)
  else:
    state, _ = checkpointer.restore(abstract, step)
  checkpointer.close()
  return state.ema_params, step


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A run's network (`make_apply_fn`) with its config and (EMA) params, ready to sample."""
  config: ml_collections.ConfigDict
  apply_fn: ApplyFn
  params: Any


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The run config `<workdir>/config.json`, after checking the workdir has checkpoints."""
  saved = directory.read_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"{os.path.join(workdir, directory.CONFIG_FILE)} not found: is "
                            f"{workdir} a run_train.py workdir?")
  if not os.path.isdir(os.path.join(workdir, directory.CHECKPOINT_DIR)):
    raise FileNotFoundError(f"{workdir} has no {directory.CHECKPOINT_DIR} folder: train first "
                            f"(run_train.py --workdir={workdir})")
  return ml_collections.ConfigDict(saved)


def load_trained(workdir: str, step: Optional[int] = None) -> TrainedModel:
  """Loads `<workdir>/config.json` and the EMA params of the given checkpoint, by default the
  newest readable one (newer unreadable ones are reported in a warning and left in place).
  A ControlNet run loads as its base model plus control branch."""
  config = read_config(workdir)
  config.mesh.shape = dict(data=1, fsdp=1, tensor=1)
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  params, _ = restore_ema_params(workdir, config, mesh, step)
  return TrainedModel(config, make_apply_fn(config), params)
