"""Where does a trained model's sample noise come from? Two read-outs per noise level (one table).

For held-out talking-faces test clips x0 (`[N, T, R, R, 3]`, pixel runs), at each schedule time t:

* **one call**: x_t = alpha x0 + sigma eps is denoised once (the model's x0 estimate with the
  clip's own conditions, no guidance). `rms error` = RMS(x0_hat - x0) next to the input's
  own noise RMS(x_t / alpha - x0) = sigma / alpha: a denoiser that removes the noise has an
  error far below it; one that passes the noise through sits close to it. `hf ratio` =
  mean |Laplacian| of x0_hat / of x0 (`alignment.fidelity`): above 1 = x0_hat carries
  high-frequency content the clips do not have.
* **restart**: the same x_t is sampled down to t = 0 with the run's guided denoiser and a
  deterministic DDIM update on a uniform 30-point time grid (SDEdit-style); the hf ratio of
  the result shows whether the noise of the final video is made at or below this level.

  python -m benchmarks.denoiser_noise --workdir=/tmp/recipe
"""
from typing import Optional, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from gcm_jax import evaluate
from gcm_jax import latents
from gcm_jax import sampling
from gcm_jax.alignment import fidelity
from gcm_jax.diffusion import schedules
from gcm_jax.models import diffusion_model


RESTART_STEPS = 30


def restart_sample(denoise, x_t: jax.Array, t0: jax.Array, cond: dict,
                   schedule: schedules.Schedule) -> jax.Array:
  """Deterministic DDIM from `x_t` `[B, ...]` at time `t0` to t = 0 on a uniform grid of
  `RESTART_STEPS` steps, ending with the last x0 estimate, clipped to [-1, 1];
  x0-denoiser `denoise(x, t [B], cond)`."""
  times = jnp.linspace(t0, 0.0, RESTART_STEPS + 1)
  b = x_t.shape[0]

  def step(x, i):
    t, t_next = times[i], times[i + 1]
    x0_hat = denoise(x, jnp.full((b,), t), cond)
    alpha, sigma = schedules.alpha_sigma(schedule, t)
    alpha_next, sigma_next = schedules.alpha_sigma(schedule, t_next)
    eps_hat = (x - alpha * x0_hat) / sigma
    # The last step returns the x0 estimate (t = 0 may keep alpha < 1, sigma > 0 in a schedule).
    last = i == RESTART_STEPS - 1
    return jnp.where(last, x0_hat, alpha_next * x0_hat + sigma_next * eps_hat), None

  x, _ = jax.lax.scan(step, x_t, jnp.arange(RESTART_STEPS))
  return jnp.clip(x, -1.0, 1.0)


def table(workdir: str, levels: Sequence[float], num_clips: int, seed: int,
          step: Optional[int] = None) -> str:
  """Markdown table, one row per noise level."""
  trained = diffusion_model.load_trained(workdir, step)
  config = trained.config
  if latents.enabled(config):
    raise ValueError(f"{workdir} is a latent run; this read-out compares pixels")
  clips = evaluate.test_clips(config, num_clips, config.data.num_frames, seed, evaluate.EVAL_KEYS)
  schedule = schedules.from_name(config.diffusion.schedule)
  plain = sampling.denoiser(trained.apply_fn, trained.params, config)
  guided = sampling.guided_denoiser(trained.apply_fn, trained.params, config)
  x0 = jnp.asarray(clips["video"])
  b = x0.shape[0]
  cond = {k: jnp.asarray(clips[k]) for k in evaluate.cond_keys(config)}
  cond.update(drop_text=jnp.zeros((b,), bool), drop_audio=jnp.zeros((b,), bool))
  one_call = jax.jit(lambda x, t: plain(x, jnp.full((b,), t), cond))
  restart = jax.jit(lambda x, t: restart_sample(guided, x, t, cond, schedule))
  reference = np.asarray(x0)
  lines = ["| t | sigma / alpha | one call: rms error (input noise) | one call: hf ratio | "
           "restart: hf ratio |", "|---|---|---|---|---|"]
  for level in levels:
    t = jnp.float32(level)
    alpha, sigma = schedules.alpha_sigma(schedule, t)
    x_t = alpha * x0 + sigma * jax.random.normal(jax.random.PRNGKey(seed), x0.shape)
    x0_hat = np.asarray(one_call(x_t, t))
    error = float(np.sqrt(np.mean((x0_hat - reference)**2)))
    noise = float(np.sqrt(np.mean((np.asarray(x_t / alpha) - reference)**2)))
    restarted = np.asarray(restart(x_t, t))
    lines.append(f"| {level:g} | {float(sigma / alpha):.3f} | {error:.3f} ({noise:.3f}) | "
                 f"{fidelity.laplacian_abs(x0_hat) / fidelity.laplacian_abs(reference):.2f} | "
                 f"{fidelity.laplacian_abs(restarted) / fidelity.laplacian_abs(reference):.2f} |")
  return "\n".join(lines)


def define_flags() -> None:
  """The CLI flags (defined here, not on import, so tests can import this module)."""
  flags.DEFINE_string("workdir", None, "run_train.py workdir of a pixel talking_faces run.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest readable).")
  flags.DEFINE_integer("num_clips", 16, "Held-out test clips.")
  flags.DEFINE_list("levels", ["0.05", "0.1", "0.3", "0.5", "0.7", "0.9", "0.98"],
                    "Schedule times t.")
  flags.DEFINE_integer("seed", 0, "Clip and noise seed.")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  print(f"{f.workdir} (step {f.step or 'newest'}): {f.num_clips} held-out clips, seed {f.seed}")
  print(table(f.workdir, [float(v) for v in f.levels], f.num_clips, f.seed, f.step))


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
