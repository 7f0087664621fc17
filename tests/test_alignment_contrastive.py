"""Contrastive losses vs float64 numpy references, unsharded and on 8 fake CPU devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from gcm_jax.alignment import contrastive

# float32 JAX vs float64 numpy: losses are O(1) sums of O(N) terms.
RTOL, ATOL = 1e-5, 1e-5


def _normalize64(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _logsumexp64(x):
  m = x.max(-1, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]


def clip_ref(a, b, scale):
  a, b = _normalize64(np.float64(a)), _normalize64(np.float64(b))
  logits = scale * a @ b.T
  idx = np.arange(len(a))
  ce_ab = np.mean(_logsumexp64(logits) - logits[idx, idx])
  ce_ba = np.mean(_logsumexp64(logits.T) - logits.T[idx, idx])
  return (ce_ab + ce_ba) / 2


def triplet_ref(a, p, n, margin, metric):
  a, p = np.float64(a), np.float64(p)
  if metric == "euclidean":
    dist = lambda x, y: np.linalg.norm(x - y, axis=-1)
  else:
    dist = lambda x, y: 1 - np.sum(_normalize64(x) * _normalize64(y), -1)
  d_pos = dist(a, p)
  if n is None:
    d_all = dist(a[:, None], p[None])
    np.fill_diagonal(d_all, np.inf)
    d_neg = d_all.min(-1)
  else:
    d_neg = dist(a, np.float64(n))
  return np.mean(np.maximum(d_pos - d_neg + margin, 0))


def siamese_ref(x1, x2, same, margin):
  d = np.linalg.norm(np.float64(x1) - np.float64(x2), axis=-1)
  y = np.float64(same)
  return np.sum(y * d**2 + (1 - y) * np.maximum(margin - d, 0)**2) / (2 * len(d))


def _data(n=16, d=8, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, d)).astype(np.float32)
  b = (a + 0.7 * rng.normal(size=(n, d))).astype(np.float32)
  c = rng.normal(size=(n, d)).astype(np.float32)
  same = rng.random(n) < 0.5
  return a, b, c, same


def test_clip_matches_float64_reference():
  a, b, _, _ = _data()
  for scale in (1.0, 14.3, 100.0):
    got = contrastive.clip_loss(jnp.asarray(a), jnp.asarray(b), jnp.float32(scale))
    np.testing.assert_allclose(got, clip_ref(a, b, scale), rtol=RTOL, atol=ATOL)


def test_clip_gradient_matches_finite_differences_of_reference():
  a, b, _, _ = _data(n=6, d=4)
  scale = 3.0
  grad_a, grad_s = jax.grad(contrastive.clip_loss, argnums=(0, 2))(
      jnp.asarray(a), jnp.asarray(b), jnp.float32(scale))
  eps = 1e-6
  num = np.zeros_like(a, np.float64)
  for idx in np.ndindex(a.shape):
    ap, am = np.float64(a), np.float64(a)
    ap[idx] += eps
    am[idx] -= eps
    num[idx] = (clip_ref(ap, b, scale) - clip_ref(am, b, scale)) / (2 * eps)
  np.testing.assert_allclose(grad_a, num, rtol=1e-4, atol=1e-5)
  num_s = (clip_ref(a, b, scale + eps) - clip_ref(a, b, scale - eps)) / (2 * eps)
  np.testing.assert_allclose(grad_s, num_s, rtol=1e-4, atol=1e-5)


def test_logit_scale_module_init_and_clip():
  module = contrastive.LogitScale()
  params = module.init(jax.random.PRNGKey(0))
  np.testing.assert_allclose(module.apply(params), 1 / 0.07, rtol=1e-6)
  big = {"params": {"log_scale": jnp.float32(10.0)}}
  assert float(module.apply(big)) == contrastive.MAX_LOGIT_SCALE


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("explicit_negative", [True, False])
def test_triplet_matches_float64_reference(metric, explicit_negative):
  a, p, n, _ = _data()
  neg = n if explicit_negative else None
  got = contrastive.triplet_loss(jnp.asarray(a), jnp.asarray(p),
                                 None if neg is None else jnp.asarray(neg),
                                 margin=0.3, metric=metric)
  want = triplet_ref(a, p, neg, 0.3, metric)
  assert want > 0  # the hinge is active, so the comparison is informative
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_siamese_matches_float64_reference_and_has_finite_grad_at_zero_distance():
  a, b, _, same = _data()
  got = contrastive.siamese_loss(jnp.asarray(a), jnp.asarray(b), jnp.asarray(same), margin=4.0)
  np.testing.assert_allclose(got, siamese_ref(a, b, same, 4.0), rtol=RTOL, atol=ATOL)
  grad = jax.grad(contrastive.siamese_loss)(jnp.asarray(a), jnp.asarray(a),
                                            jnp.zeros(len(a), bool), margin=1.0)
  assert np.all(np.isfinite(grad))


def test_shape_errors():
  x = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="equal shapes"):
    contrastive.clip_loss(x, jnp.zeros((5, 3)), jnp.float32(1.0))
  with pytest.raises(ValueError, match="scalar"):
    contrastive.clip_loss(x, x, jnp.ones(2))
  with pytest.raises(ValueError, match="same must be"):
    contrastive.siamese_loss(x, x, jnp.zeros(3))
  with pytest.raises(ValueError, match="metric"):
    contrastive.triplet_loss(x, x, x, metric="l1")


def _mesh():
  """(4, 2) over the 8 fake devices of tests/conftest.py."""
  return jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)


@pytest.mark.parametrize("axes", [("data", "fsdp"), "data"])
def test_sharded_losses_equal_unsharded_reference(axes):
  mesh = _mesh()
  a, b, c, same = _data(n=16)
  spec = P(axes)
  put = lambda x: jax.device_put(jnp.asarray(x), NamedSharding(mesh, spec))

  def losses(a, b, c, same, scale):
    return jnp.stack([
        contrastive.clip_loss(a, b, scale, axis_name=axes),
        contrastive.triplet_loss(a, b, c, margin=0.3, axis_name=axes),
        contrastive.triplet_loss(a, b, margin=0.3, metric="cosine", axis_name=axes),
        contrastive.siamese_loss(a, b, same, margin=4.0, axis_name=axes),
    ])

  # With `axes == "data"` the batch is replicated over 'fsdp'; collectives only span 'data'.
  sharded = jax.jit(jax.shard_map(losses, mesh=mesh, in_specs=(spec,) * 4 + (P(),),
                                  out_specs=P()))
  scale = jnp.float32(10.0)
  got = sharded(put(a), put(b), put(c), put(same), scale)
  want = [clip_ref(a, b, 10.0), triplet_ref(a, b, c, 0.3, "euclidean"),
          triplet_ref(a, b, None, 0.3, "cosine"), siamese_ref(a, b, same, 4.0)]
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

  # Gradients through the all-gathers equal the unsharded ones.
  grad_sharded = jax.grad(lambda *args: sharded(*args).sum(), argnums=(0, 1, 4))(
      put(a), put(b), put(c), put(same), scale)
  grad_ref = jax.grad(
      lambda a, b, s: jnp.stack([
          contrastive.clip_loss(a, b, s),
          contrastive.triplet_loss(a, b, jnp.asarray(c), margin=0.3),
          contrastive.triplet_loss(a, b, margin=0.3, metric="cosine"),
          contrastive.siamese_loss(a, b, jnp.asarray(same), margin=4.0)]).sum(),
      argnums=(0, 1, 2))(jnp.asarray(a), jnp.asarray(b), scale)
  for g, r in zip(grad_sharded, grad_ref):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_global_arrays_under_jit_with_named_sharding():
  mesh = _mesh()
  a, b, _, _ = _data(n=16)
  sharding = NamedSharding(mesh, P(("data", "fsdp")))
  loss = jax.jit(contrastive.clip_loss)(jax.device_put(a, sharding), jax.device_put(b, sharding),
                                        jnp.float32(10.0))
  np.testing.assert_allclose(loss, clip_ref(a, b, 10.0), rtol=RTOL, atol=ATOL)
