"""Train state, optimizer and EMA.

The optimizer is AdamW with linear warmup + cosine decay and global-norm clipping,
wrapped in `optax.apply_if_finite`: a step whose gradients contain NaN/Inf leaves
params, optimizer moments and EMA untouched and is counted in `skipped_steps`.
"""
import functools
from typing import Any, Callable, Mapping, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from gcm_jax import config_rules

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes (all jax.Arrays, checkpointed whole).

  Attributes:
    step: number of optimizer steps taken (including skipped ones), int32 scalar.
    params: model parameters (float32).
    ema_params: exponential moving average of `params`, used for sampling.
    opt_state: optax state (includes the non-finite step counters).
  """
  step: jax.Array
  params: PyTree
  ema_params: PyTree
  opt_state: PyTree


def learning_rate_schedule(train_config: Mapping[str, Any]) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine decay to 1% of it at `num_steps`."""
  peak = train_config["learning_rate"]
  warmup = min(train_config["warmup_steps"], max(train_config["num_steps"] - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(train_config["num_steps"], warmup + 1), end_value=0.01 * peak)


def _decay_mask(params: PyTree, scanned_key: Optional[str] = None) -> PyTree:
  """Weight decay on matrices only (not biases, norms or 1-D embeddings); the leading
  `[depth]` axis of scanned blocks (params under the key `scanned_key`) does not count."""
  def is_matrix(path, p):
    stacked = scanned_key is not None and any(getattr(k, "key", None) == scanned_key
                                              for k in path)
    return p.ndim - int(stacked) >= 2
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(train_config: Mapping[str, Any],
                   param_labels: Optional[Callable[[PyTree], PyTree]] = None,
                   scanned_key: Optional[str] = None) -> optax.GradientTransformation:
  """AdamW + warmup/cosine + clipping, skipping updates with non-finite gradients.

  `param_labels(params)` may label each parameter "train" or "freeze"; frozen ones get
  zero updates and no optimizer state (e.g. a base model under a ControlNet branch).
  `scanned_key` names the params of scanned blocks (`stdit.SCANNED_BLOCKS`), whose leading
  `[depth]` axis the weight-decay mask does not count.
  """
  inner = optax.chain(
      optax.clip_by_global_norm(train_config["grad_clip_norm"]),
      optax.adamw(learning_rate_schedule(train_config), b1=train_config["b1"],
                  b2=train_config["b2"], weight_decay=train_config["weight_decay"],
                  mask=functools.partial(_decay_mask, scanned_key=scanned_key)))
  if param_labels is not None:
    inner = optax.multi_transform({"train": inner, "freeze": optax.set_to_zero()},
                                  param_labels)
  return optax.apply_if_finite(inner, max_consecutive_errors=2**31 - 1)


def optimizer_rules(section: str = "train") -> tuple[config_rules.Rule, ...]:
  """The checks of the `config.<section>` fields `make_optimizer` and `apply_gradients` read."""
  return (
      config_rules.integer(f"{section}.num_steps", 1),
      config_rules.positive(f"{section}.learning_rate"),
      config_rules.integer(f"{section}.warmup_steps", 0),
      config_rules.non_negative(f"{section}.weight_decay"),
      config_rules.positive(f"{section}.grad_clip_norm"),
      config_rules.number(f"{section}.b1", 0.0, 1.0, high_open=True),
      config_rules.number(f"{section}.b2", 0.0, 1.0, high_open=True),
      config_rules.number(f"{section}.ema_decay", 0.0, 1.0, high_open=True),
      config_rules.boolean(f"{section}.ema_warmup"),
  )


def create_state(params: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params),
                    opt_state=optimizer.init(params))


def ema_decay_at(step: jax.Array, max_decay: float, warmup: bool = True) -> jax.Array:
  """EMA decay for the update made at `step` (the number of updates before it).

  With warm-up, min(max_decay, (1 + step) / (10 + step)) (the `num_updates` rule of
  TensorFlow's ExponentialMovingAverage): early averages forget the random initial
  weights within tens of steps instead of ~1 / (1 - max_decay) steps. Without it,
  `max_decay` at every step.
  """
  step = jnp.asarray(step, jnp.float32)
  if not warmup:
    return jnp.full_like(step, max_decay)
  return jnp.minimum(max_decay, (1.0 + step) / (10.0 + step))


def apply_gradients(state: TrainState, grads: PyTree, optimizer: optax.GradientTransformation,
                    ema_decay: float, ema_warmup: bool = True) -> TrainState:
  """One optimizer + EMA update (both skipped when the gradients are not finite).

  The EMA decay follows `ema_decay_at(state.step, ema_decay, ema_warmup)`; the average
  moves by (1 - decay) (p - e), so it stays bit-identical where params equal it (a frozen
  base model).
  """
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = opt_state.last_finite
  decay = ema_decay_at(state.step, ema_decay, ema_warmup)
  ema_params = jax.tree.map(
      lambda e, p: jnp.where(finite, e + (1.0 - decay) * (p - e), e),
      state.ema_params, params)
  return TrainState(step=state.step + 1, params=params, ema_params=ema_params,
                    opt_state=opt_state)


def skipped_steps(state: TrainState) -> jax.Array:
  """How many updates were skipped for non-finite gradients so far."""
  return state.opt_state.total_notfinite


def update_with_metrics(state: TrainState, grads: Any, out: Mapping[str, jax.Array],
                        optimizer: optax.GradientTransformation, train_config: Mapping[str, Any]
                        ) -> tuple[TrainState, dict[str, jax.Array]]:
  """`apply_gradients` (optimizer + EMA with `train_config`'s ema_decay / ema_warmup) and the
  loss metrics `out` plus grad_norm, learning_rate and skipped_steps."""
  new_state = apply_gradients(state, grads, optimizer, train_config["ema_decay"],
                              train_config["ema_warmup"])
  return new_state, dict(
      out, grad_norm=optax.global_norm(grads),
      learning_rate=learning_rate_schedule(train_config)(state.step),
      skipped_steps=skipped_steps(new_state))
