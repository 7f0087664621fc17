"""Latent diffusion: the run's frozen autoencoder, chosen by `config.latent`.

  source   none     pixel diffusion (the default)
           diffusers  an AutoencoderKL in diffusers' format (`path`: a folder with
                      config.json + diffusion_pytorch_model.safetensors, e.g. the
                      sd-vae-ft-mse you downloaded); its scaling_factor / shift_factor
           workdir  an autoencoder trained here (`path`: a
                      `python -m gcm_jax.train.train_autoencoder` workdir); the scale and
                      shift computed from its training data
           random   seeded random weights of the named `config` (tests, plumbing checks)
  path     see above
  config   `gcm_jax.models.autoencoder.CONFIGS` name for source `random`
  seed     random-init seed

The diffusion model then works on scaled latents `(mean - shift) * scale` `[B, T, R/f, R/f, 4]`
of each clip (the posterior mean; computed once and cached beside the dataset, like the
frozen-encoder features, keyed by the autoencoder's identity); sampling, `gcm-generate`,
`evaluate` and the lip-sync loss decode them to pixels (clipping after decoding).
"""
import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections

from gcm_jax.models import autoencoder as ae
from gcm_jax.models import trained_autoencoder
from gcm_jax.runs import export


NONE = "none"


@dataclasses.dataclass(frozen=True, eq=False)
class Autoencoder:
  """A loaded frozen autoencoder: module, params, config (with scale / shift), identity."""
  module: ae.AutoencoderKL
  params: Any
  config: ae.AutoencoderConfig
  identity: str

  def encode(self, video: jax.Array) -> jax.Array:
    """Video `[B, T, H, W, 3]` in [-1, 1] -> scaled latents `[B, T, H/f, W/f, C]`."""
    mean, _ = self.module.apply({"params": self.params}, video, method=ae.AutoencoderKL.encode)
    return ae.scale_latents(mean, self.config)

  def decode(self, latents: jax.Array, params: Optional[Any] = None) -> jax.Array:
    """Scaled latents `[B, T, h, w, C]` -> video `[B, T, h f, w f, 3]` (not clipped).

    `params` overrides the stored ones (pass them as a jit argument so they are not baked
    into the compiled program as constants)."""
    return self.module.apply({"params": self.params if params is None else params},
                             ae.unscale_latents(latents, self.config),
                             method=ae.AutoencoderKL.decode)


def _random(spec: ml_collections.ConfigDict) -> tuple[ae.AutoencoderConfig, Any, str]:
  if spec.config not in ae.CONFIGS:
    raise ValueError(f"unknown config.latent.config {spec.config!r}; expected one of "
                     f"{tuple(ae.CONFIGS)}")
  config = ae.CONFIGS[spec.config]
  params = trained_autoencoder.init_params(config, jax.random.PRNGKey(spec.seed))
  return config, params, f"random-{spec.config}-seed{spec.seed}"


def _diffusers(spec: ml_collections.ConfigDict) -> tuple[ae.AutoencoderConfig, Any, str]:
  config, params = ae.load_diffusers(spec.path)
  return config, params, f"diffusers:{export.params_digest(params)[:16]}"


def _workdir(spec: ml_collections.ConfigDict) -> tuple[ae.AutoencoderConfig, Any, str]:
  config, params = trained_autoencoder.load_trained_autoencoder(spec.path)
  return config, params, trained_autoencoder.autoencoder_identity(spec.path, params)


SOURCES: dict[str, Callable[[ml_collections.ConfigDict], tuple[ae.AutoencoderConfig, Any, str]]]
SOURCES = {"random": _random, "diffusers": _diffusers, "workdir": _workdir}


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether the run diffuses in an autoencoder's latent space."""
  return config.get("latent", {}).get("source", NONE) != NONE


@functools.lru_cache(maxsize=4)
def _load(source: str, path: str, name: str, seed: int) -> Autoencoder:
  spec = ml_collections.ConfigDict(dict(source=source, path=path, config=name, seed=seed))
  config, params, identity = SOURCES[source](spec)
  params = jax.tree.map(jnp.asarray, params)
  scale = f"scale={config.scaling_factor:.6g},shift={config.shift_factor:.6g}"
  return Autoencoder(ae.AutoencoderKL(config), params, config, f"{identity}|{scale}")


def load(config: ml_collections.ConfigDict) -> Optional[Autoencoder]:
  """The run's autoencoder (loaded once per process), or None for pixel diffusion."""
  if not enabled(config):
    return None
  spec = config.latent
  return _load(spec.source, spec.path, spec.config, spec.seed)


def diffusion_shape(config: ml_collections.ConfigDict, batch: int, frames: int
                    ) -> tuple[int, ...]:
  """Shape of what the model denoises: `[B, T, R, R, C]` pixels or `[B, T, R/f, R/f, C]`."""
  r = config.data.resolution
  autoencoder = load(config)
  if autoencoder is not None:
    r //= autoencoder.config.downsampling
  return (batch, frames, r, r, config.model.in_channels)


@functools.partial(jax.jit, static_argnums=0)
def _decode(autoencoder: Autoencoder, params: Any, latents: jax.Array) -> jax.Array:
  return jnp.clip(autoencoder.decode(latents, params), -1.0, 1.0)


def to_pixels(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
  """`x -> video [B, T, R, R, 3]` in [-1, 1] for what the model generated: clip (pixel runs),
  or decode then clip (latent runs; jitted, the params an argument, not a constant)."""
  autoencoder = load(config)
  if autoencoder is None:
    return lambda x: jnp.clip(x, -1.0, 1.0)
  return lambda x: _decode(autoencoder, autoencoder.params, x)
