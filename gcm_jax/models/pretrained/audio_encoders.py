"""The registry of frozen pretrained voice encoders: `config.model.audio_encoder` names one.

An entry is a module (big_vision's convention: the module is the registry entry) that
exposes, under these names:

  CONFIGS          {size name: architecture config}; `config.pretrained.audio_size` picks one
                   for random weights (ablations, tests) and checks a checkpoint against it.
  LAYERS           the hidden-state selections `config.pretrained.audio_layers` may name:
                   'blocks' (per-block states, the encoder's anchor convention) and 'final'.
  load_encoder(path, size=None) -> (module, params)
                   weights a user fetched; every architecture number read from the
                   checkpoint (its config, else its tensors), never assumed.
  random_encoder(size, seed) -> (module, params)
  frame_features(module, params, audio_16k [N], num_video_frames, fps, context, layers)
                   -> float32 `[T, W, D]`: one window of features per video frame.
  window_shape(config, context, layers) -> (W, D)

The model reads the windows from the batch key that is the encoder's name (`conditioning`);
`gcm_jax.frozen_encoders` runs the encoder outside the model and the data pipeline caches
its output. The model's own trained log-mel encoder ('mel') is not a frozen encoder and is
not listed here. Adding an encoder: one module in this folder and one line below.
"""
from types import ModuleType

from gcm_jax.models.pretrained import wav2vec2
from gcm_jax.models.pretrained import whisper

ENCODERS: dict[str, ModuleType] = {
    "whisper": whisper,
    "wav2vec2": wav2vec2,
}
