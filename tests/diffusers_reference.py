"""float64 numpy transcriptions of diffusers' scheduler formulas (diffusers is not installed).

Transcribed from diffusers' `schedulers/scheduling_ddim.py` and `scheduling_ddpm.py`
(`betas_for_alpha_bar`, `__init__` beta schedules, `set_timesteps`, `step`), with torch float32
tensors replaced by float64 numpy, prediction_type="epsilon", no sample clipping, DDIM's
set_alpha_to_one=True (the final step lands on alphabar = 1), steps_offset = 0.
"""
import math

import numpy as np


def betas_for_alpha_bar(num_diffusion_timesteps, max_beta=0.999):
  """diffusers `betas_for_alpha_bar` with alpha_transform_type="cosine"."""
  def alpha_bar_fn(t):
    return math.cos((t + 0.008) / 1.008 * math.pi / 2)**2

  betas = []
  for i in range(num_diffusion_timesteps):
    t1 = i / num_diffusion_timesteps
    t2 = (i + 1) / num_diffusion_timesteps
    betas.append(min(1 - alpha_bar_fn(t2) / alpha_bar_fn(t1), max_beta))
  return np.array(betas, np.float64)


# gcm_jax config schedule name -> diffusers' betas for its scheduler arguments.
BETAS = {
    # beta_schedule="squaredcos_cap_v2"
    "squaredcos_cap_v2": lambda: betas_for_alpha_bar(1000),
    # beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012 (Stable Diffusion)
    "scaled_linear": lambda: np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64)**2,
    # beta_schedule="linear", beta_start=0.0001, beta_end=0.02 (the DDPM defaults)
    "linear_discrete": lambda: np.linspace(0.0001, 0.02, 1000, dtype=np.float64),
}


def alphas_cumprod(betas):
  return np.cumprod(1.0 - betas, axis=0)


def set_timesteps(timestep_spacing, num_train_timesteps, num_inference_steps):
  """DDIMScheduler.set_timesteps: integer timesteps, noisiest first."""
  if timestep_spacing == "leading":
    step_ratio = num_train_timesteps // num_inference_steps
    return (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].copy().astype(np.int64)
  assert timestep_spacing == "trailing"
  step_ratio = num_train_timesteps / num_inference_steps
  timesteps = np.round(np.arange(num_train_timesteps, 0, -step_ratio)).astype(np.int64)
  return timesteps - 1


def ddim_step(alphas_cumprod_, num_train_timesteps, num_inference_steps, model_output, timestep,
              sample, eta, variance_noise):
  """DDIMScheduler.step -> prev_sample."""
  prev_timestep = timestep - num_train_timesteps // num_inference_steps
  alpha_prod_t = alphas_cumprod_[timestep]
  alpha_prod_t_prev = alphas_cumprod_[prev_timestep] if prev_timestep >= 0 else 1.0
  beta_prod_t = 1 - alpha_prod_t
  pred_original_sample = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
  pred_epsilon = model_output
  beta_prod_t_prev = 1 - alpha_prod_t_prev
  variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
  std_dev_t = eta * variance**0.5
  pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2)**0.5 * pred_epsilon
  prev_sample = alpha_prod_t_prev**0.5 * pred_original_sample + pred_sample_direction
  if eta > 0:
    prev_sample = prev_sample + std_dev_t * variance_noise
  return prev_sample


def ddpm_step(alphas_cumprod_, num_train_timesteps, num_inference_steps, model_output, timestep,
              sample, variance_noise):
  """DDPMScheduler.step with variance_type="fixed_small" -> prev_sample."""
  prev_t = timestep - num_train_timesteps // num_inference_steps
  alpha_prod_t = alphas_cumprod_[timestep]
  alpha_prod_t_prev = alphas_cumprod_[prev_t] if prev_t >= 0 else 1.0
  beta_prod_t = 1 - alpha_prod_t
  beta_prod_t_prev = 1 - alpha_prod_t_prev
  current_alpha_t = alpha_prod_t / alpha_prod_t_prev
  current_beta_t = 1 - current_alpha_t
  pred_original_sample = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
  pred_original_sample_coeff = (alpha_prod_t_prev**0.5 * current_beta_t) / beta_prod_t
  current_sample_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
  pred_prev_sample = (pred_original_sample_coeff * pred_original_sample
                      + current_sample_coeff * sample)
  if timestep > 0:
    variance = max((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, 1e-20)
    pred_prev_sample = pred_prev_sample + variance**0.5 * variance_noise
  return pred_prev_sample
