"""The scores that train and judge the contrastive models: SyncNet pair accuracy and the
text-video alignment score.

LSE-D / LSE-C / offset are syncnet_python's read-out of SyncNet embeddings
(`gcm_jax.models.sync_offsets`); the synthetic faces' oracle mouth metric is their dataset's
ground truth (`gcm_jax.data.talking_faces.ground_truth`).
"""
import jax
import jax.numpy as jnp

from gcm_jax.alignment import contrastive


def sync_accuracy(video_emb: jax.Array, audio_emb: jax.Array, label: jax.Array,
                  threshold: float = 0.5) -> jax.Array:
  """In-sync vs off-sync pair classification accuracy with p = cos(v, a) > threshold.

  Args:
    video_emb, audio_emb: [N, D] unit embeddings of N pairs; label: [N] 1 in sync, 0 off.
  Returns:
    Scalar fraction of correctly classified pairs.
  """
  cos = jnp.sum(video_emb * audio_emb, axis=-1)
  return jnp.mean(((cos > threshold) == (label > 0.5)).astype(jnp.float32))


def text_video_score(text_emb: jax.Array, video_emb: jax.Array) -> jax.Array:
  """CLIPScore-style text-video alignment: 100 * max(cos(text, video), 0) per pair.

  Args:
    text_emb, video_emb: [B, D] embeddings from the contrastive text-video model
      (`gcm_jax.alignment.contrastive.TextVideoCLIP`).
  Returns:
    [B] scores in [0, 100].
  """
  cos = jnp.sum(contrastive.l2_normalize(text_emb) * contrastive.l2_normalize(video_emb), -1)
  return 100.0 * jnp.maximum(cos, 0.0)
