"""Scanned blocks (`scan_blocks=True`): the looped model's function on stacked params.

The reference is always the looped model (`scan_blocks=False`) with the same weights,
converted by `stdit.stack_block_params`; every test also checks that the scanned model
really is scanned (params stacked on a leading 'layers' axis, a `scan` in the jaxpr).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax.models import control
from gcm_jax.models import controlnet
from gcm_jax.models import stdit
from gcm_jax.parallel import mesh as mesh_lib
from gcm_jax.runs import state as state_lib
from gcm_jax.train import trainer


from tests import train_utils
from tests.test_stdit import SMALL, _inputs, _randomize

DEPTH = 3


def _model(scan: bool, remat: str = "none", **overrides) -> stdit.STDiT:
  return stdit.STDiT(**dict(SMALL, depth=DEPTH, remat_policy=remat, **overrides),
                     scan_blocks=scan)


def _is_scanned(model, params) -> bool:
  x, t, cond = _inputs()
  return "scan[" in str(jax.make_jaxpr(model.apply)({"params": params}, x, t, cond))


def _assert_trees_close(a, b, atol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=atol, rtol=0), a, b)


@pytest.fixture(scope="module")
def looped_params():
  """Randomized (all gates active) params of the depth-3 looped model."""
  x, t, cond = _inputs()
  return _randomize(nn.meta.unbox(_model(False).init(jax.random.PRNGKey(0), x, t, cond))
                    ["params"])


def test_scanned_params_are_the_looped_params_stacked(looped_params):
  x, t, cond = _inputs()
  boxed = _model(True).init(jax.random.PRNGKey(0), x, t, cond)["params"]
  scanned = nn.meta.unbox(boxed)
  stacked = stdit.stack_block_params(looped_params)
  assert "block_0" not in scanned and "block_0" in looped_params
  assert (jax.tree.map(jnp.shape, scanned) == jax.tree.map(jnp.shape, stacked))
  assert (sum(p.size for p in jax.tree.leaves(scanned))
          == sum(p.size for p in jax.tree.leaves(looped_params)))
  blocks = jax.tree.leaves(boxed[stdit.SCANNED_BLOCKS],
                           is_leaf=lambda v: isinstance(v, nn.Partitioned))
  assert blocks and all(v.names[0] == stdit.LAYERS_AXIS and v.value.shape[0] == DEPTH
                        and len(v.names) == v.value.ndim for v in blocks)
  np.testing.assert_array_equal(stacked[stdit.SCANNED_BLOCKS]["mlp"]["fc1"]["kernel"][2],
                                looped_params["block_2"]["mlp"]["fc1"]["kernel"])
  jax.tree.map(np.testing.assert_array_equal, stdit.unstack_block_params(stacked),
               looped_params)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_scanned_model_equals_looped_model(looped_params, remat):
  """Outputs and every gradient agree within 1e-5 (float32)."""
  loop, scan = _model(False, remat), _model(True, remat)
  stacked = stdit.stack_block_params(looped_params)
  assert _is_scanned(scan, stacked) and not _is_scanned(loop, looped_params)
  x, t, cond = _inputs(key=3)
  out_loop = loop.apply({"params": looped_params}, x, t, cond)
  out_scan = scan.apply({"params": stacked}, x, t, cond)
  assert np.abs(np.asarray(out_loop)).max() > 0.1
  np.testing.assert_allclose(out_scan, out_loop, atol=1e-5, rtol=0)
  loss = lambda m: lambda p: (m.apply({"params": p}, x, t, cond) ** 2).mean()
  grads_loop = jax.grad(loss(loop))(looped_params)
  grads_scan = jax.grad(loss(scan))(stacked)
  assert grads_scan[stdit.SCANNED_BLOCKS]["mlp"]["fc1"]["kernel"].shape[0] == DEPTH
  _assert_trees_close(stdit.unstack_block_params(grads_scan), grads_loop, atol=1e-5)


def test_scanned_model_is_zero_at_init():
  scan = _model(True)
  x, t, cond = _inputs()
  params = nn.meta.unbox(scan.init(jax.random.PRNGKey(0), x, t, cond))["params"]
  assert params[stdit.SCANNED_BLOCKS]["adaln_modulation"]["kernel"].shape[0] == DEPTH
  np.testing.assert_array_equal(scan.apply({"params": params}, x, t, cond), 0.0)
  out = scan.apply({"params": _randomize(params)}, x, t, cond)
  assert np.isfinite(out).all() and np.abs(out).max() > 1e-3


def test_control_residuals_are_added_after_the_same_blocks(looped_params):
  """K = 2 of 3 residuals: the scanned model pads them to the depth with zeros."""
  x, t, cond = _inputs()
  grid = (x.shape[2] // SMALL["patch_size"]) * (x.shape[3] // SMALL["patch_size"])
  residuals = [jax.random.normal(jax.random.PRNGKey(i), (x.shape[0], x.shape[1], grid,
                                                         SMALL["width"])) for i in (1, 2)]
  cond = dict(cond, control=residuals)
  out_loop = _model(False).apply({"params": looped_params}, x, t, cond)
  out_scan = _model(True).apply({"params": stdit.stack_block_params(looped_params)}, x, t, cond)
  np.testing.assert_allclose(out_scan, out_loop, atol=1e-5, rtol=0)
  plain = _model(False).apply({"params": looped_params}, x, t, dict(cond, control=()))
  assert np.abs(np.asarray(out_loop - plain)).max() > 1e-3


def test_control_branch_rejects_scan_and_copies_a_scanned_base(looped_params):
  x, t, cond = _inputs()
  maps = jax.random.uniform(jax.random.PRNGKey(5), x.shape[:4] + (9,))  # Any control maps.
  branch_kw = dict(SMALL, depth=DEPTH, num_blocks=2)
  with pytest.raises(ValueError, match="config.model.scan_blocks"):
    controlnet.ControlBranch(**branch_kw, scan_blocks=True).init(
        jax.random.PRNGKey(1), x, t, cond, maps)
  branch = controlnet.ControlBranch(**branch_kw)
  fresh = nn.meta.unbox(branch.init(jax.random.PRNGKey(1), x, t, cond, maps))["params"]
  stacked = stdit.stack_block_params(looped_params)
  from_scanned = controlnet.init_from_base(fresh, stacked)
  jax.tree.map(np.testing.assert_array_equal, from_scanned,
               controlnet.init_from_base(fresh, looped_params))
  jax.tree.map(np.testing.assert_array_equal, from_scanned["block_1"], looped_params["block_1"])
  branch_params = _randomize(from_scanned, key=3)  # Trained zero layers: active residuals.
  cond = dict(cond, **{control.MAPS_KEY: maps})
  out_loop = control.controlled_apply_fn(_model(False), branch)(
      {"base": looped_params, "control": branch_params}, x, t, cond)
  out_scan = control.controlled_apply_fn(_model(True), branch)(
      {"base": stacked, "control": branch_params}, x, t, cond)
  np.testing.assert_allclose(out_scan, out_loop, atol=1e-5, rtol=0)


def test_weight_decay_skips_the_stacked_axis(looped_params):
  """With zero gradients AdamW only decays; the scanned layout decays the same (matrix)
  params as the looped one, not its stacked biases [depth, D]."""
  config = train_utils.micro_config()
  config.train.update(warmup_steps=0, weight_decay=0.5)
  optimizer = state_lib.make_optimizer(config.train, scanned_key=stdit.SCANNED_BLOCKS)

  def decayed(params):
    state = state_lib.create_state(params, optimizer)
    zeros = jax.tree.map(jnp.zeros_like, params)
    return state_lib.apply_gradients(state, zeros, optimizer, ema_decay=0.9).params

  looped = decayed(looped_params)
  bias = looped_params["block_0"]["mlp"]["fc1"]["bias"]
  np.testing.assert_array_equal(looped["block_0"]["mlp"]["fc1"]["bias"], bias)
  assert np.abs(np.asarray(looped["block_0"]["mlp"]["fc1"]["kernel"]
                           - looped_params["block_0"]["mlp"]["fc1"]["kernel"])).max() > 0
  _assert_trees_close(stdit.unstack_block_params(
      decayed(stdit.stack_block_params(looped_params))), looped, atol=1e-7)


def test_fsdp_train_step_matches_the_loop():
  """Two train steps on the 8-device mesh (data 2 x fsdp 4): same losses and params."""
  assert len(jax.devices()) == 8
  configs = {scan: train_utils.micro_config() for scan in (False, True)}
  for scan, config in configs.items():
    config.model.update(depth=2, scan_blocks=scan)
    config.mesh.shape = dict(data=2, fsdp=4, tensor=1)
  mesh = mesh_lib.make_mesh(configs[False].mesh)
  looped, loop_shardings = trainer.init_state(configs[False], mesh)
  fresh, shardings = trainer.init_state(configs[True], mesh)  # Zero Adam moments, as looped.
  kernel_spec = shardings.params[stdit.SCANNED_BLOCKS]["mlp"]["fc1"]["kernel"].spec
  assert kernel_spec[:2] == (None, "fsdp")  # 'layers' unsharded, 'embed' over fsdp.
  stack = lambda params: jax.tree.map(jnp.copy, stdit.stack_block_params(params))  # Own
  scanned = jax.device_put(fresh.replace(params=stack(looped.params),  # buffers: donated.
                                         ema_params=stack(looped.ema_params)), shardings)
  results = {}
  for scan, state, state_shardings in ((False, looped, loop_shardings),
                                       (True, scanned, shardings)):
    step = trainer.compile_train_step(configs[scan], mesh, state_shardings)
    losses = []
    for i in range(2):
      batch = jax.device_put(train_utils.synthetic_batch(configs[scan], seed=i),
                             mesh_lib.batch_sharding(mesh))
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    results[scan] = state, losses
  assert np.isfinite(results[False][1]).all() and results[False][1][0] > 0
  np.testing.assert_allclose(results[True][1], results[False][1], rtol=2e-5)
  scanned_params = results[True][0].params
  assert scanned_params[stdit.SCANNED_BLOCKS]["mlp"]["fc1"]["kernel"].shape[0] == 2
  _assert_trees_close(stdit.unstack_block_params(scanned_params), results[False][0].params,
                      atol=2e-5)


def test_converters_reject_other_layouts(looped_params):
  with pytest.raises(ValueError, match="no looped block params"):
    stdit.stack_block_params({"patch_embed": 1})
  with pytest.raises(ValueError, match="block_0 ... block_"):
    stdit.stack_block_params({"block_0": 1, "block_2": 2})
  with pytest.raises(ValueError, match="no scanned block params"):
    stdit.unstack_block_params(looped_params)
