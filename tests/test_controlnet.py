"""ControlNet branch: identity at init, copies the base, trains alone, steered by the maps."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gcm_jax.models import control
from gcm_jax.models import controlnet
from gcm_jax.models import stdit
from gcm_jax.runs import state as state_lib


from tests import train_utils
from tests.test_stdit import SMALL, _inputs, _randomize

B, T, R, CC = 2, 3, 8, 9


def _maps(key=5):
  """Control maps `[B, T, R, R, Cc]` (random: the model does not care where they come from)."""
  return jax.random.uniform(jax.random.PRNGKey(key), (B, T, R, R, CC))


@pytest.fixture(scope="module")
def models_and_params():
  base = stdit.STDiT(**SMALL)
  branch = controlnet.ControlBranch(**SMALL, num_blocks=1)
  x, t, cond = _inputs()
  base_params = _randomize(nn.meta.unbox(base.init(jax.random.PRNGKey(0), x, t, cond))["params"])
  branch_params = nn.meta.unbox(branch.init(jax.random.PRNGKey(1), x, t, cond, _maps()))["params"]
  return base, branch, base_params, controlnet.init_from_base(branch_params, base_params)


def test_branch_copies_base_and_starts_as_identity(models_and_params):
  base, branch, base_params, branch_params = models_and_params
  jax.tree.map(np.testing.assert_array_equal, branch_params["block_0"], base_params["block_0"])
  assert "block_1" not in branch_params
  np.testing.assert_array_equal(branch_params["zero_proj_0"]["kernel"], 0.0)
  x, t, cond = _inputs()
  apply = control.controlled_apply_fn(base, branch)
  params = {"base": base_params, "control": branch_params}
  controlled = apply(params, x, t, dict(cond, control_maps=_maps()))
  np.testing.assert_array_equal(controlled, base.apply({"params": base_params}, x, t, cond))
  # Once the zero layers are trained (here: perturbed), the maps steer the output.
  params["control"] = _randomize(branch_params, key=3)
  out_a = apply(params, x, t, dict(cond, control_maps=_maps(5)))
  out_b = apply(params, x, t, dict(cond, control_maps=_maps(6)))
  assert np.abs(np.asarray(out_a - out_b)).max() > 1e-4


def test_only_the_branch_trains(models_and_params):
  base, branch, base_params, branch_params = models_and_params
  config = train_utils.micro_config()
  config.train.warmup_steps = 0
  optimizer = state_lib.make_optimizer(config.train, control.param_labels)
  params = {"base": base_params, "control": branch_params}
  state = state_lib.create_state(params, optimizer)
  x, t, cond = _inputs()
  cond = dict(cond, control_maps=_maps())
  loss = lambda p: jnp.mean((control.controlled_apply_fn(base, branch)(p, x, t, cond) - x)**2)
  grads = jax.grad(loss)(params)
  for leaf in jax.tree.leaves(grads["base"]):
    np.testing.assert_array_equal(leaf, 0.0)
  state = state_lib.apply_gradients(state, grads, optimizer, ema_decay=0.9)
  jax.tree.map(np.testing.assert_array_equal, state.params["base"], base_params)
  changed = optax.global_norm(jax.tree.map(lambda a, b: a - b, state.params["control"],
                                           branch_params))
  assert float(changed) > 1e-4


def test_bad_control_maps_error(models_and_params):
  base, branch, base_params, branch_params = models_and_params
  x, t, cond = _inputs()
  with pytest.raises(ValueError, match="control maps"):
    branch.apply({"params": branch_params}, x, t, cond, jnp.zeros((B, T, 4, 4, 9)))
  with pytest.raises(ValueError, match="needs cond\\['control_maps'\\]"):
    control.controlled_apply_fn(base, branch)(
        {"base": base_params, "control": branch_params}, x, t, cond)
