"""Training a ControlNet branch on top of a frozen base STDiT.

Params are `{'base': base_params, 'control': branch_params}`; the base half is wrapped
in `stop_gradient` (no backward pass through its weights is computed) and labelled
"freeze" for the optimizer (zero updates, no Adam state), so only the branch trains.
The control maps come from the batch's keypoints (`cond['keypoints']` `[B, T, K, 2]`):
keypoint heatmaps for motion plus the head-layout map for composition.
"""
from typing import Any, Mapping

import jax

from gcm_jax.models import controlnet
from gcm_jax.models import stdit
from gcm_jax.train import step as step_lib


def controlled_apply_fn(base: stdit.STDiT, branch: controlnet.ControlBranch) -> step_lib.ApplyFn:
  """`(params {'base', 'control'}, x_t, t, cond) -> output` of the base model with control."""

  def apply(params: Mapping[str, Any], x: jax.Array, t: jax.Array,
            cond: Mapping[str, jax.Array]) -> jax.Array:
    if "keypoints" not in cond:
      raise ValueError("a control branch needs cond['keypoints'] [B, T, K, 2]")
    maps = controlnet.control_maps(cond["keypoints"], x.shape[2])
    residuals = branch.apply({"params": params["control"]}, x, t, cond, maps)
    return base.apply({"params": jax.lax.stop_gradient(params["base"])}, x, t,
                      dict(cond, control=residuals))

  return apply


def param_labels(params: Mapping[str, Any]) -> dict[str, Any]:
  """Optimizer labels: the base model frozen, the control branch trained."""
  return {"base": jax.tree.map(lambda _: "freeze", params["base"]),
          "control": jax.tree.map(lambda _: "train", params["control"])}
