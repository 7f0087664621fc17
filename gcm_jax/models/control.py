"""ControlNet runs: a control branch trained on top of a frozen base STDiT.

`config.control.enabled` turns a run into one: params are `{'base': base_params,
'control': branch_params}`, the base half initialized from a trained run's EMA params and
the branch from a copy of them (`controlnet.init_from_base`). The base half is wrapped in
`stop_gradient` (no backward pass through its weights is computed) and labelled "freeze"
for the optimizer (zero updates, no Adam state), so only the branch trains. The control
maps are the batch feature `control_maps` `[B, T, R, R, Cc]` made by the input pipeline
(keypoint heatmaps for motion plus the head-layout map for composition), passed to the
network as `cond['control_maps']`.
"""
from typing import Any, Callable, Mapping

import jax
import ml_collections

from gcm_jax.models import controlnet
from gcm_jax.models import stdit

MAPS_KEY = "control_maps"  # The batch feature and condition holding the control maps.


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` describes a ControlNet run (configs saved before `control` existed
  describe plain runs)."""
  return bool(config.get("control", {}).get("enabled", False))


def batch_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The per-frame conditions a ControlNet run adds to the batch and `cond` (else none)."""
  return (MAPS_KEY,) if enabled(config) else ()


def make_branch(config: ml_collections.ConfigDict) -> controlnet.ControlBranch:
  """The control branch of `config.model`'s STDiT copying `config.control.num_blocks` blocks."""
  return controlnet.ControlBranch(**config.model.to_dict(),
                                  num_blocks=config.control.num_blocks)


def init_params(branch: controlnet.ControlBranch, key: jax.Array,
                inputs: Mapping[str, Any], base_params: Any) -> dict[str, Any]:
  """`{'base': base_params, 'control': ...}`: the branch initialized on `inputs` (x, t,
  cond with `cond[MAPS_KEY]`) and copied from `base_params` where it shares their names.
  Boxed (nn.Partitioned) branch params stay boxed."""
  cond = inputs["cond"]
  control_params = branch.init(key, inputs["x"], inputs["t"], cond, cond[MAPS_KEY])["params"]
  return {"base": base_params, "control": controlnet.init_from_base(control_params, base_params)}


def controlled_apply_fn(base: stdit.STDiT, branch: controlnet.ControlBranch
                        ) -> Callable[..., jax.Array]:
  """`(params {'base', 'control'}, x_t, t, cond) -> output` of the base model steered by
  the branch's residuals for `cond['control_maps']` `[B, T, R, R, Cc]`."""

  def apply(params: Mapping[str, Any], x: jax.Array, t: jax.Array,
            cond: Mapping[str, jax.Array]) -> jax.Array:
    if MAPS_KEY not in cond:
      raise ValueError(f"a ControlNet run needs cond[{MAPS_KEY!r}] [B, T, R, R, Cc] (the "
                       f"input pipeline's control maps, or gcm-generate --control)")
    residuals = branch.apply({"params": params["control"]}, x, t, cond, cond[MAPS_KEY])
    return base.apply({"params": jax.lax.stop_gradient(params["base"])}, x, t,
                      dict(cond, control=residuals))

  return apply


def param_labels(params: Mapping[str, Any]) -> dict[str, Any]:
  """Optimizer labels: the base model frozen, the control branch trained."""
  return {"base": jax.tree.map(lambda _: "freeze", params["base"]),
          "control": jax.tree.map(lambda _: "train", params["control"])}
