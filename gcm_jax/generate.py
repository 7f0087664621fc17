"""Generate a talking-face video from a text script and a voice recording.

CLI (installed as `gcm-generate`):
  gcm-generate --workdir=/tmp/gcm_tiny --text="a green face on a purple background, moving
    left, says: hello there" --audio=voice.wav --output=out.mp4

A run of a given person (`config.model.reference_frames` > 0) animates a photo: it is
face-detected and cropped as the real-video ingest crops frames
(`data/video_folder/photo.face_crop`; a clear error for no face, several faces, a tiny
face), or taken as it is with `--reference_is_crop` (a square crop, e.g. a frame of a
talking-faces clip); its crop fills every reference frame the model takes:
  gcm-generate --workdir=RUN --reference=photo.png --audio=voice.wav [--text="..."]

A dubbing run (`config.model.masked_source`) re-voices a video file instead: the face
tracked and cropped as the ingest does, each face segment's crops generated with the mouth
area masked (and, with `reference_frames` K > 0, K of the segment's own crops as the
reference), pasted back feathered into the source's own frames at its size and frame times,
with the new voice (cut or padded with silence to the video) as the audio
(`data/video_folder/dubbing.py` has the recorded behaviours: cuts, second faces, VFR, ...):
  gcm-generate --workdir=RUN --source_video=in.mp4 --audio=voice.wav --output=out.mp4
A dubbing run without --source_video, --source_video to another run, and --reference with a
dubbing run are one-line errors.

A ControlNet run (`config.control.enabled`) also needs control maps, a float `.npy`
array `[N, R, R, Cc]` (keypoint heatmaps + head layout, one frame per video frame; make
them from a test clip with `python -m gcm_jax.data.talking_faces.control_maps`):
  gcm-generate --workdir=/tmp/gcm_control --text=... --audio=voice.wav --control=maps.npy

Every input is checked before the model is loaded: the output path (an extension ffmpeg
can mux H.264 video + AAC audio into: .mp4, .mov or .mkv; a folder that exists or can be
created, and is writable), the workdir (`config.json` and a `checkpoints` folder), the
text (optional: without --text the model's null caption, as a caption dropped in training;
given, non-empty, at most `config.model.text_max_len` UTF-8 bytes, and within the token
limit of a pretrained text encoder), the audio (read in
full) and the control maps (given if and only if the run is a ControlNet run; shape,
frames). A bad input ends the CLI with a one-line error and exit code 1. Orbax/absl INFO
logs are shown only with `--verbose` (which also shows the traceback of an input error).

Audio: a WAV file (`gcm_jax.wav_io`): PCM 8/16/24/32-bit or float 32/64-bit, plain or
WAVE_FORMAT_EXTENSIBLE (as ffmpeg writes), any channel count, sample rate and length;
other codecs (mu-law, ADPCM, MP3, ...) are refused with the ffmpeg command that converts
them. It is downmixed to mono and resampled to 16 kHz; the video covers it at 25 fps,
generated in windows of the training length that overlap by `motion_frames`
(docs/diffusion.md, long-video extension).

Python API:
  model = diffusion_model.load_trained(workdir)
  samples, rate = wav_io.read_wav("voice.wav")
  video, wav = generate(model, text, samples, rate, key)   # [N, H, W, 3] in [-1, 1]
  video, wav = generate(model, text, samples, rate, key, control_maps=np.load("maps.npy"))
  video, wav = generate(model, text, samples, rate, key,
                        reference=load_reference("photo.png", model.config))
  dubbed = dub(model, "in.mp4", samples, rate, key)  # .frames uint8 [F, H, W, 3], .audio
"""
import dataclasses
import json
import logging
import os
import sys
import tempfile
from typing import Optional

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from gcm_jax import frozen_encoders
from gcm_jax import latents
from gcm_jax import sampling
from gcm_jax import video_io
from gcm_jax import wav_io
from gcm_jax.data import audio as audio_lib
from gcm_jax.data import contract
from gcm_jax.data import datasets
from gcm_jax.data.video_folder import builder
from gcm_jax.data.video_folder import dubbing
from gcm_jax.data.video_folder import paste
from gcm_jax.data.video_folder import photo
from gcm_jax.diffusion import extension
from gcm_jax.diffusion import samplers
from gcm_jax.models import conditioning
from gcm_jax.models import control
from gcm_jax.models import diffusion_model
from gcm_jax.models import tokenizer
from gcm_jax.runs import checkpoint as checkpoint_lib


# Containers that hold H.264 video + AAC audio (what video_io.write_mp4 muxes).
OUTPUT_EXTENSIONS = (".mp4", ".mov", ".mkv")


def prepare_audio(samples: np.ndarray, sample_rate: int, min_frames: int
                  ) -> tuple[np.ndarray, int]:
  """Mono 16 kHz audio zero-padded to whole video frames, at least `min_frames` of them.

  `samples` is `[S]` (mono) or `[S, channels]`. Returns (wav `[F * 640]`, N) where
  N = ceil(duration * 25) frames cover the audio and F = max(N, min_frames).
  """
  samples = np.asarray(samples, np.float32)
  if samples.ndim == 2:
    samples = samples.mean(axis=1)
  if samples.ndim != 1 or samples.size == 0:
    raise ValueError(f"audio must be [S] or [S, channels] with S > 0, got {samples.shape}")
  wav = audio_lib.resample(samples, sample_rate, audio_lib.SAMPLE_RATE)
  per_frame = audio_lib.SAMPLES_PER_VIDEO_FRAME
  num_frames = -(-wav.size // per_frame)
  padded_frames = max(min_frames, num_frames)
  return np.pad(wav, (0, padded_frames * per_frame - wav.size)), num_frames


def check_control_maps(config: ml_collections.ConfigDict, maps: Optional[np.ndarray],
                       num_frames: int) -> None:
  """Raises ValueError unless `maps` suit the run: float `[N >= num_frames, R, R, Cc]` for a
  ControlNet run (R = config.data.resolution, Cc = config.control.channels), None otherwise."""
  if not control.enabled(config):
    if maps is not None:
      raise ValueError("control maps were given but the run is not a ControlNet run "
                       "(config.control.enabled is False); leave out --control")
    return
  r, channels = config.data.resolution, config.control.channels
  if maps is None:
    raise ValueError(f"the run is a ControlNet run: give control maps [N, {r}, {r}, {channels}]"
                     f" with --control=FILE.npy (python -m gcm_jax.data.talking_faces."
                     f"control_maps makes them from a test clip)")
  if (maps.ndim != 4 or maps.shape[1:] != (r, r, channels)
      or not np.issubdtype(maps.dtype, np.floating)):
    raise ValueError(f"control maps must be a float array [N, {r}, {r}, {channels}] "
                     f"(resolution {r}, {channels} channels), got {maps.dtype} {maps.shape}")
  if maps.shape[0] < num_frames:
    raise ValueError(f"control maps cover {maps.shape[0]} frames but the audio needs "
                     f"{num_frames} video frames")


def text_cond(config: ml_collections.ConfigDict, encoders: frozen_encoders.FrozenEncoders,
              text: Optional[str]) -> dict[str, jax.Array]:
  """The caption's model inputs for one video: byte tokens 'text_tokens' int32 `[1, L]` or a
  pretrained encoder's 'text_embeddings' float32 `[1, L, E]`, with 'text_mask' bool `[1, L]`.
  With `text` None, zeros with an all-False mask: the empty text, which the model reads as
  the dropped caption (its learned null embedding)."""
  if text is None:
    if encoders.text is None:
      shapes = {"text_tokens": (config.model.text_max_len,),
                "text_mask": (config.model.text_max_len,)}
    else:
      shapes = {k: v for k, v in encoders.feature_shapes(1).items()
                if k in conditioning.PRETRAINED_TEXT_KEYS}
    return {k: jnp.zeros((1,) + shape, bool if k == "text_mask" else
                         jnp.int32 if k == "text_tokens" else jnp.float32)
            for k, shape in shapes.items()}
  if encoders.text is None:
    tokens = tokenizer.encode(text, config.model.text_max_len)
    return {"text_tokens": jnp.asarray(tokens)[None],
            "text_mask": jnp.asarray(tokenizer.padding_mask(tokens))[None]}
  return {k: jnp.asarray(v) for k, v in encoders.encode_captions([text]).items()}


def generate(trained: diffusion_model.TrainedModel, text: Optional[str], samples: np.ndarray,
             sample_rate: int, key: jax.Array, motion_frames: Optional[int] = None,
             progress: bool = True, control_maps: Optional[np.ndarray] = None,
             reference: Optional[np.ndarray] = None, source: Optional[np.ndarray] = None,
             source_mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
  """Generates a video for `text` and the voice `samples` (`[S]` or `[S, channels]`).

  `text` None: no caption (`text_cond`), e.g. for a run of a given person, whom the
  reference or the source shows.

  A run of a given person needs `reference`, uint8 frames `[N, R, R, 3]` of them (e.g.
  `load_reference`; `reference_cond`).

  A dubbing run (`model.masked_source`) needs `source`, the face crops to re-voice, uint8
  `[N, R, R, 3]` with N >= the video's frames, and takes `source_mask` bool `[N, R, R]` (the
  area to regenerate; default `crop_mask`); `source_cond`. `dub` does this for a video file.

  A ControlNet run needs `control_maps` `[N, R, R, Cc]` with N >= the video's frames (see
  `check_control_maps`); each window sees its frames' maps, as it sees its frames' audio.

  Returns:
    video float32 `[N, H, W, 3]` in [-1, 1] at 25 fps, N = ceil(duration * 25), and the
    16 kHz mono audio it is aligned with (`[N * 640]`, zero-padded).
  """
  config = trained.config
  window = config.data.num_frames
  motion = config.diffusion.max_motion_frames if motion_frames is None else motion_frames
  wav, num_frames = prepare_audio(samples, sample_rate, min_frames=window)
  total = wav.size // audio_lib.SAMPLES_PER_VIDEO_FRAME
  check_control_maps(config, control_maps, num_frames)
  if source is not None and len(source) < num_frames:
    raise ValueError(f"the source covers {len(source)} frames but the audio needs "
                     f"{num_frames} video frames")
  mel = audio_lib.frame_windows(audio_lib.melspectrogram(wav), total, config.data.mel_window,
                                config.data.mel_alignment)
  cond = {"mel": jnp.asarray(mel)[None], **sampling.keep_all(config, 1),
          **reference_cond(config, reference), **source_cond(config, source, source_mask, total)}
  encoders = frozen_encoders.FrozenEncoders(config)  # Pretrained text / Whisper features.
  cond.update(text_cond(config, encoders, text))
  cond.update({k: jnp.asarray(v)[None] for k, v in encoders.encode_voice(wav, total).items()})
  if control_maps is not None:  # Padded with its last frame to the audio's padded length.
    maps = np.asarray(control_maps[:total], np.float32)
    maps = np.pad(maps, [(0, total - len(maps))] + [(0, 0)] * 3, mode="edge")
    cond[control.MAPS_KEY] = jnp.asarray(maps)[None]
  cfg = sampling.sampler_config(config)
  num_windows = len(extension.window_starts(total, window, motion))
  bar = tqdm.tqdm(total=num_windows * samplers.nfe(cfg), desc="denoising", unit="step",
                  disable=not progress)
  denoise = sampling.guided_denoiser(trained.apply_fn, trained.params, config,
                                     with_text=text is not None)

  def counted(x, t, c):
    jax.debug.callback(lambda: bar.update(1), ordered=True)
    return denoise(x, t, c)

  run = jax.jit(lambda k, c: extension.generate_long_video(
      counted, k, c, cfg, latents.diffusion_shape(config, 1, total), window, motion,
      time_keys=sampling.time_keys(config)))
  video = np.asarray(latents.to_pixels(config)(run(key, cond)))[0]
  bar.close()
  return video[:num_frames], wav[:num_frames * audio_lib.SAMPLES_PER_VIDEO_FRAME]


def check_output_path(path: str) -> None:
  """Raises ValueError unless `path` is a video file name that can be written.

  Its extension must be one of OUTPUT_EXTENSIONS; its folder must exist or be creatable,
  and be writable (probed with a temporary file in the nearest existing folder).
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in OUTPUT_EXTENSIONS:
    problem = f"extension {ext} cannot hold" if ext else "no extension for"
    raise ValueError(f"--output {path}: {problem} H.264 video + AAC audio; use one of "
                     f"{', '.join(OUTPUT_EXTENSIONS)}")
  if os.path.isdir(path):
    raise ValueError(f"--output {path} is a folder; give a file name ending in {ext}")
  folder = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise ValueError(f"--output {path}: cannot create its folder, {folder} is a file")
  try:
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise ValueError(f"--output {path}: cannot write in {folder} ({e.strerror})") from e


def reference_cond(config: ml_collections.ConfigDict, reference: Optional[np.ndarray]
                   ) -> dict[str, jax.Array]:
  """cond['reference'] `[1, K, R, R, 3]` in [-1, 1] from frames uint8 `[N, R, R, 3]` of the
  person (repeated in turn to the run's K = `model.reference_frames`); {} for a run without
  reference frames. ValueError when a run needs a reference and none is given or the
  other way round, or the frames are not the run's resolution."""
  k = config.model.get("reference_frames", 0)
  if not k:
    if reference is not None:
      raise ValueError("this run takes no reference frames (config.model.reference_frames "
                       "= 0): it draws the person from the caption; drop --reference")
    return {}
  if reference is None:
    raise ValueError(f"this run draws a given person (config.model.reference_frames = {k}): "
                     f"pass --reference=photo.png")
  frames = np.asarray(reference)
  r = config.data.resolution
  if frames.ndim != 4 or frames.shape[1:] != (r, r, 3) or frames.dtype != np.uint8:
    raise ValueError(f"reference frames must be uint8 [N, {r}, {r}, 3] (the run's "
                     f"resolution), got {frames.dtype} {list(frames.shape)}")
  frames = frames[np.arange(k) % len(frames)].astype(np.float32) / 127.5 - 1.0
  return {"reference": jnp.asarray(frames)[None]}


def dubs(config: ml_collections.ConfigDict, source_given: bool) -> bool:
  """Whether the run dubs a source video (`model.masked_source`); ValueError when a source is
  given to a run that does not dub, or none to one that does."""
  if config.model.get("masked_source", False):
    if not source_given:
      raise ValueError("this run dubs a source video (config.model.masked_source): pass "
                       "--source_video=VIDEO (from Python: generate.dub)")
    return True
  if source_given:
    raise ValueError("this run does not dub (config.model.masked_source is False): it draws "
                     "whole frames from the caption and voice; drop --source_video")
  return False


def crop_mask(config: ml_collections.ConfigDict, crops: np.ndarray) -> tuple[np.ndarray, str]:
  """The area a dubbing run regenerates in face crops uint8 `[N, R, R, 3]`: bool `[N, R, R]`,
  and a line saying which mask it is.

  The run's dataset's 'source_mask' maker (the mask it was trained with; video_folder:
  `contract.lower_half`) applied to the crops; where that maker reads clip features a video's
  crops do not have (talking_faces: the keypoints of its drawn faces), `contract.lower_half`.
  """
  name, record = config.data.name, {"video": crops}
  try:
    return (datasets.get(name).derived["source_mask"](record, config.data.resolution),
            f"the {name} dataset's dubbing mask")
  except KeyError as e:
    return (contract.lower_half(record, config.data.resolution),
            f"the lower half of each crop (the {name} dataset makes its dubbing mask from "
            f"{e.args[0]!r}, which a video's crops do not have)")


def source_cond(config: ml_collections.ConfigDict, source: Optional[np.ndarray],
                mask: Optional[np.ndarray], total: int) -> dict[str, jax.Array]:
  """cond['source'] `[1, total, R, R, 3]` in [-1, 1] and cond['source_mask'] `[1, total, R, R,
  1]` from face crops uint8 `[N, R, R, 3]` and their mask bool `[N, R, R]` (default
  `crop_mask`), cut or padded with their last frame to `total` frames; {} for a run that does
  not dub. ValueError as `dubs`, or for crops or a mask of another shape."""
  if not dubs(config, source is not None):
    return {}
  r = config.data.resolution
  frames = np.asarray(source)
  if frames.ndim != 4 or frames.shape[1:] != (r, r, 3) or frames.dtype != np.uint8:
    raise ValueError(f"source frames must be uint8 [N, {r}, {r}, 3] (the run's resolution), "
                     f"got {frames.dtype} {list(frames.shape)}")
  mask = crop_mask(config, frames)[0] if mask is None else np.asarray(mask)
  if mask.shape != frames.shape[:3] or mask.dtype != bool:
    raise ValueError(f"the source mask must be bool {list(frames.shape[:3])}, got {mask.dtype} "
                     f"{list(mask.shape)}")
  pad = [(0, max(0, total - len(frames)))]
  frames = np.pad(frames[:total], pad + [(0, 0)] * 3, mode="edge")
  mask = np.pad(mask[:total], pad + [(0, 0)] * 2, mode="edge")
  return {"source": jnp.asarray(frames.astype(np.float32) / 127.5 - 1.0)[None],
          "source_mask": jnp.asarray(mask, jnp.float32)[None, ..., None]}


def source_settings(config: ml_collections.ConfigDict) -> builder.Settings:
  """How a dubbing run's source video is tracked and cropped: the settings of the run's
  video_folder build (its staging/settings.json, so the crops are framed like its training
  clips) where there is one, else the builder's defaults; at the run's resolution."""
  d = config.data
  path = os.path.join(d.get("data_dir", ""), builder.NAME,
                      builder.config_name(d.resolution, d.num_frames), "staging",
                      "settings.json")
  saved = {}
  if d.name == builder.NAME and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  fields = {f.name for f in dataclasses.fields(builder.Settings)}
  return builder.Settings(**{**{k: v for k, v in saved.items() if k in fields},
                             "resolution": d.resolution, "num_frames": d.num_frames})


def open_source(path: str, config: ml_collections.ConfigDict) -> dubbing.SourceVideo:
  """The video at `path` tracked for the run (`dubbing.track_source` with `source_settings`);
  errors name `--source_video`."""
  try:
    return dubbing.track_source(path, source_settings(config))
  except ValueError as e:
    raise ValueError(f"--source_video {path}: {e}") from e


@dataclasses.dataclass
class Dubbed:
  """A dubbed video (`dub`).

  Attributes:
    frames: uint8 `[F, H, W, 3]`: the source's F frames at its size.
    times: float `[F]`: their presentation times, s after the first (the source's).
    pasted: bool `[F]`: the frames with a generated crop pasted in; the others are the
      source's frames unchanged.
    audio: float32 `[N * 640]`: the voice, 16 kHz mono, cut or padded with silence to the
      video's N 25 fps frames.
    notes: one line each: what was dubbed, the mask, the audio's length against the video's.
  """
  frames: np.ndarray
  times: np.ndarray
  pasted: np.ndarray
  audio: np.ndarray
  notes: list[str]


def dub_crops(trained: diffusion_model.TrainedModel, source: dubbing.SourceVideo,
              samples: np.ndarray, sample_rate: int, key: jax.Array, text: Optional[str],
              progress: bool = True
              ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, list[str]]:
  """The model part of dubbing `source` with the voice `samples` (`[S]` or `[S, channels]`).

  Each segment (face track) is generated on its own by `generate` (long videos in windows)
  from its crops (`dubbing.segment_crops`) masked by `crop_mask`, with its slice of the voice
  and, for a run with K = `model.reference_frames` > 0, K of its crops evenly spaced over the
  segment as the reference (segment `i` samples with `fold_in(key, i)`).

  Returns:
    per segment the generated crops float `[L, R, R, 3]` in [-1, 1] and their paste weights
    float32 `[L, R, R]` (`paste.feather_mask` of the mask), the voice float32 `[N * 640]`
    (16 kHz, cut or padded with silence to the video's N frames) and the notes of `Dubbed`.
  """
  config = trained.config
  dubs(config, True)
  spf, n = audio_lib.SAMPLES_PER_VIDEO_FRAME, source.num_frames
  wav, voice_frames = prepare_audio(samples, sample_rate, min_frames=n)
  wav = wav[:n * spf]
  voice, video_s = len(samples) / sample_rate, n / audio_lib.FPS
  if voice_frames > n:
    audio_note = (f"the voice ({voice:.2f} s) is longer than the video ({video_s:.2f} s): "
                  f"cut to the video")
  elif voice_frames < n:
    audio_note = (f"the voice ({voice:.2f} s) is shorter than the video ({video_s:.2f} s): "
                  f"padded with {video_s - voice:.2f} s of silence")
  else:
    audio_note = f"the voice ({voice:.2f} s) covers the video ({video_s:.2f} s)"
  k = config.model.get("reference_frames", 0)
  generated, weights, mask_note = [], [], ""
  for i, (segment, crops) in enumerate(zip(source.segments, dubbing.segment_crops(source))):
    mask, mask_note = crop_mask(config, crops)
    reference = crops[np.linspace(0, len(crops) - 1, k).round().astype(int)] if k else None
    video, _ = generate(trained, text, wav[segment.start * spf:segment.end * spf],
                        audio_lib.SAMPLE_RATE, jax.random.fold_in(key, i), progress=progress,
                        reference=reference, source=crops, source_mask=mask)
    generated.append(video)
    weights.append(np.stack([paste.feather_mask(config.data.resolution, m) for m in mask]))
  ends = source.track_ends
  notes = [f"dubbed {source.dubbed_frames} of {n} frames (25 fps) in {len(source.segments)} "
           f"face segment(s) (scene cuts: {ends['scene_cut']}, stretches with a second face "
           f"left as they are: {ends['second_face']}); frames without a tracked face are the "
           f"source's",
           f"regenerated area: {mask_note}", audio_note]
  return generated, weights, wav, notes


def dub(trained: diffusion_model.TrainedModel, source_video: str, samples: np.ndarray,
        sample_rate: int, key: jax.Array, text: Optional[str] = None, progress: bool = True
        ) -> Dubbed:
  """Dubs the video file `source_video` with the voice `samples` (`[S]` or `[S, channels]`)
  at the source's size and frame timing (`dubbing`'s module docstring; `dub_crops`). Holds
  every frame in memory; `generate_file` streams them to the output file instead."""
  source = open_source(source_video, trained.config)
  generated, weights, wav, notes = dub_crops(trained, source, samples, sample_rate, key, text,
                                             progress)
  times, frames, pasted = zip(*dubbing.paste_frames(source, generated, weights))
  return Dubbed(np.stack(frames), np.array(times), np.array(pasted), wav, notes)


def load_reference(path: str, config: ml_collections.ConfigDict, is_crop: bool = False
                   ) -> np.ndarray:
  """uint8 `[1, R, R, 3]`: the face crop of the photo at `path` at the run's resolution
  (`photo.face_crop`, as the ingest crops video frames), or with `is_crop` the image itself
  (square; resized to R). Errors name `--reference`."""
  r = config.data.resolution
  try:
    image = photo.read_image(path)
    if not is_crop:
      return photo.face_crop(image, r)[0][None]
  except ValueError as e:
    raise ValueError(f"--reference {path}: {e}") from e
  h, w = image.shape[:2]
  if h != w:
    raise ValueError(f"--reference {path}: --reference_is_crop needs a square image, got "
                     f"{w}x{h}")
  return np.asarray(jax.image.resize(image.astype(np.float32), (r, r, 3), "linear")
                    ).round().clip(0, 255).astype(np.uint8)[None]


def load_control_maps(path: str) -> np.ndarray:
  """The array of a `.npy` file; ValueError (naming `--control`) if it holds none."""
  try:
    return np.load(path, allow_pickle=False)
  except ValueError as e:
    raise ValueError(f"--control {path}: not a .npy array ({e})") from e


def check_inputs(workdir: str, text: Optional[str], audio: str, output: str,
                 num_steps: Optional[int] = None, control_path: Optional[str] = None,
                 reference_path: Optional[str] = None, reference_is_crop: bool = False,
                 source_path: Optional[str] = None
                 ) -> tuple[np.ndarray, int, Optional[np.ndarray], Optional[np.ndarray],
                            Optional[dubbing.SourceVideo]]:
  """Checks every CLI input without touching the model.

  Returns:
    `wav_io.read_wav(audio)` (samples, rate), the control maps of `control_path` (None
    without), the reference frames of `reference_path` (`load_reference`; None without) and
    the tracked source video of `source_path` (`open_source`; None without).
  Raises:
    ValueError, OSError (FileNotFoundError, ...): one-line messages naming the bad input.
  """
  check_output_path(output)
  config = diffusion_model.read_config(workdir)
  if text is not None and conditioning.text_keys(config.model)[0] == "text_tokens":
    tokenizer.encode(text, config.model.text_max_len)
  elif text is not None:
    frozen_encoders.FrozenEncoders(config).check_caption(text)
  if num_steps is not None and num_steps < 1:
    raise ValueError(f"--num_steps must be at least 1, got {num_steps}")
  dubbing_run = dubs(config, source_path is not None)
  if dubbing_run and reference_path is not None:
    raise ValueError("--reference: a dubbing run takes its reference frames from "
                     "--source_video (crops of its face track); drop --reference")
  samples, rate = wav_io.read_wav(audio)
  _, num_frames = prepare_audio(samples, rate, min_frames=config.data.num_frames)
  maps = None if control_path is None else load_control_maps(control_path)
  try:
    check_control_maps(config, maps, num_frames)
  except ValueError as e:
    raise ValueError(f"--control{'' if control_path is None else ' ' + control_path}: {e}"
                     ) from e
  if dubbing_run:
    return samples, rate, maps, None, open_source(source_path, config)
  reference = (None if reference_path is None
               else load_reference(reference_path, config, reference_is_crop))
  reference_cond(config, reference)
  return samples, rate, maps, reference, None


def generate_file(workdir: str, text: Optional[str], audio: str, output: str, seed: int = 0,
                  num_steps: Optional[int] = None, progress: bool = True,
                  control_path: Optional[str] = None, reference_path: Optional[str] = None,
                  reference_is_crop: bool = False, source_path: Optional[str] = None) -> str:
  """gcm-generate: checks the inputs, then samples (or dubs `source_path`) and writes
  `output`; returns a summary (a dub's: one line, then its notes, one line each)."""
  samples, rate, maps, reference, source = check_inputs(
      workdir, text, audio, output, num_steps, control_path, reference_path,
      reference_is_crop, source_path)
  trained = diffusion_model.load_trained(workdir)
  if num_steps is not None:
    trained.config.sampling.num_steps = num_steps
  key = jax.random.PRNGKey(seed)
  if source is not None:
    generated, weights, wav, notes = dub_crops(trained, source, samples, rate, key, text,
                                               progress)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    count = dubbing.write_video(output, dubbing.paste_frames(source, generated, weights),
                                source.width, source.height, wav, source.frame_rate)
    return "\n".join([f"wrote {output}: {count} frames ({source.num_frames / 25:.2f} s) at "
                      f"{source.width}x{source.height}, the source's frame times (average "
                      f"{source.frame_rate:.3g} fps)"] + [f"  note: {n}" for n in notes])
  video, wav = generate(trained, text, samples, rate, key, progress=progress,
                        control_maps=maps, reference=reference)
  path = video_io.write_mp4(output, video, wav)
  return (f"wrote {path}: {video.shape[0]} frames ({video.shape[0] / 25:.2f} s) at "
          f"{video.shape[1]}x{video.shape[2]}")


def _set_log_level(verbose: bool) -> None:
  """Shows absl and Python-logging (Orbax) INFO lines only if `verbose`; warnings always."""
  absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
  logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)


def _main(argv) -> None:
  f = flags.FLAGS
  _set_log_level(f.verbose)
  if len(argv) > 1:
    sys.exit(f"gcm-generate: unexpected arguments {argv[1:]}; quote the --text value")
  try:
    print(generate_file(f.workdir, f.text, f.audio, f.output, f.seed, f.num_steps,
                        control_path=f.control, reference_path=f.reference,
                        reference_is_crop=f.reference_is_crop, source_path=f.source_video))
  except (ValueError, OSError, checkpoint_lib.CheckpointError) as e:
    if f.verbose:
      raise
    sys.exit(f"gcm-generate: {e}")


def main() -> None:
  """Console entry point `gcm-generate` (flags are defined here, not on import)."""
  flags.DEFINE_string("workdir", None, "run_train.py workdir with a checkpoint.")
  flags.DEFINE_string("text", None, "Caption + script, e.g. 'a green face ... says: hi' "
                      "(optional: without it the model's null caption).")
  flags.DEFINE_string("audio", None, "Voice recording: WAV, PCM or float, any rate/channels.")
  flags.DEFINE_string("output", "generated.mp4", "Output video: .mp4, .mov or .mkv.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("num_steps", None, "Sampler steps (default: the config's).")
  flags.DEFINE_string("control", None, "ControlNet runs: control maps, a float .npy "
                      "[N, R, R, Cc] with N >= the video's frames.")
  flags.DEFINE_string("reference", None, "Runs of a given person: a photo of them (the face "
                      "is detected and cropped as the ingest crops videos).")
  flags.DEFINE_bool("reference_is_crop", False, "--reference is already a square face crop "
                    "(e.g. a frame of a talking-faces clip): no face detection.")
  flags.DEFINE_string("source_video", None, "Dubbing runs (config.model.masked_source): the "
                      "video to re-voice; the output keeps its size and frame times.")
  flags.DEFINE_bool("verbose", False, "Show absl/Orbax INFO logs and input-error tracebacks.")
  flags.mark_flags_as_required(["workdir", "audio"])
  app.run(_main, argv=sys.argv)


if __name__ == "__main__":
  main()
