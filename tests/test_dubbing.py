"""Dubbing a source video (`gcm-generate --source_video`, `generate.dub`,
`data/video_folder/dubbing.py`) with a tiny masked-source run and the astronaut-face videos of
`tests/video_fixtures.py`."""
import os
import subprocess
import sys

import av
import cv2
import jax
import numpy as np
import pytest

from gcm_jax import frozen_encoders
from gcm_jax import generate
from gcm_jax import video_io
from gcm_jax.data import contract
from gcm_jax.data.video_folder import decode
from gcm_jax.data.video_folder import dubbing
from gcm_jax.data.video_folder import paste
from gcm_jax.models import diffusion_model
from gcm_jax.runs import directory
from gcm_jax.train import trainer
from tests import train_utils
from tests import video_fixtures as vf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "a face says: hello there"
CUT, FACELESS = 0.8, 1.6  # The source's second shot and its face-less shot start (s).


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
  """A dubbing run (masked source + one reference frame) on the talking faces, two steps."""
  config = train_utils.micro_config()
  config.model.update(reference_frames=1, masked_source=True)
  config.train.num_steps = 2
  config.sampling.update(num_steps=2)
  workdir = str(tmp_path_factory.mktemp("dub_run"))
  trainer.train(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
  """Source videos: 'shots', variable frame rate without an audio stream: a face, a cut to
  another shot of it at CUT s, a cut to a face-less shot at FACELESS s; 'short' (50 fps, with
  audio); 'no_face', 'two_people', 'truncated' and 'text' (not a video)."""
  folder = str(tmp_path_factory.mktemp("sources"))
  render = vf.render
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(vf, "render", lambda spec, t, openness: render(
        spec if t < FACELESS else vf.Spec(spec.name, face=False), t, openness))
    paths = {"shots": vf.write(vf.Spec("shots", duration=2.0, fps=None, has_audio=False,
                                       scene_cut=CUT, marker=None), folder)}
    # A still face: the fixtures' path over 0.4 s moves it so fast that the cut detector fires.
    patch.setattr(vf, "face_position", lambda spec, t: (np.array([128.0, 96.0]), 0.55))
    paths["short"] = vf.write(vf.Spec("short", duration=0.4, fps=50, marker=None), folder)
  paths.update(
      no_face=vf.write(vf.Spec("no_face", duration=0.6, face=False, marker=None), folder),
      two_people=vf.write(vf.Spec("two_people", duration=0.8, size=(384, 192), marker=None,
                                  second_face=True), folder),
      truncated=vf.write(vf.Spec("truncated", duration=0.6, marker=None, truncate=True),
                         folder))
  paths["text"] = os.path.join(folder, "notes.mp4")
  with open(paths["text"], "w", encoding="utf-8") as f:
    f.write("these are not the frames you are looking for\n")
  return paths


def _source_frames(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(times s after the first frame `[F]`, uint8 frames `[F, H, W, 3]`) as decoded."""
  times, _, frames = zip(*decode.source_frames(path))
  return np.array(times) - times[0], np.stack(frames)


def _placed(frame_shape: tuple[int, ...], box: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """bool [H, W]: where paste_back may change a frame (the weight resized to the box > 0)."""
  h, w = frame_shape[:2]
  x0, y0, x1, y1 = paste.paste_box(box)
  pad = max(0, -x0, -y0, x1 - w, y1 - h)
  canvas = np.zeros((h + 2 * pad, w + 2 * pad), bool)
  canvas[y0 + pad:y1 + pad, x0 + pad:x1 + pad] = cv2.resize(
      weight, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR) > 0
  return canvas[pad:pad + h, pad:pad + w]


def test_dub_keeps_the_source_outside_the_pasted_mouths(run, videos, monkeypatch, tmp_path):
  """The Python API on a variable-frame-rate source with a scene cut and a face-less shot:
  the source's frames, times and size; the two shots dubbed on their own (each its own crops,
  mask and reference); every pixel outside the feathered paste region and every face-less
  frame bit-identical to the decoded source; the voice padded with silence to the video."""
  calls = []
  real_generate = generate.generate

  def spy(*args, **kwargs):
    calls.append(kwargs)
    return real_generate(*args, **kwargs)

  monkeypatch.setattr(generate, "generate", spy)
  trained = diffusion_model.load_trained(run)
  voice = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(1.5 * 44100)) / 44100)  # 1.5 s
  dubbed = generate.dub(trained, videos["shots"], np.stack([voice, voice], 1), 44100,
                        jax.random.PRNGKey(0), TEXT, progress=False)
  times, frames = _source_frames(videos["shots"])
  assert dubbed.frames.shape == frames.shape and dubbed.frames.dtype == np.uint8
  np.testing.assert_allclose(dubbed.times, times, atol=1e-9)
  assert len(set(np.round(np.diff(times), 4))) == 2  # Variable: 1/20 and 1/45 s apart.

  source = generate.open_source(videos["shots"], trained.config)
  first, second = source.segments  # The two shots of the face, each held to its cut.
  assert 48 <= source.num_frames <= 50 and source.track_ends["scene_cut"] == 2
  assert first.start == 0 and first.end == second.start and 38 <= second.end <= 42 < source.num_frames
  assert np.abs(first.end / 25 - CUT) < 0.1
  crops = dubbing.segment_crops(source)
  assert len(calls) == 2
  for call, segment_crops in zip(calls, crops):
    np.testing.assert_array_equal(call["source"], segment_crops)
    assert call["source_mask"][:, 16:].all() and not call["source_mask"][:, :16].any()
    assert call["reference"].shape == (1, 32, 32, 3)
    assert any((call["reference"][0] == c).all() for c in segment_crops)  # Its own person.

  faceless = times >= FACELESS
  assert not dubbed.pasted[faceless].any() and dubbed.pasted[~faceless].all()
  np.testing.assert_array_equal(dubbed.frames[faceless], frames[faceless])
  weight = paste.feather_mask(32, contract.lower_half({"video": np.zeros(1)}, 32)[0])
  changed = 0
  for i in np.flatnonzero(~faceless):
    end = times[i + 1] if i + 1 < len(times) else times[i] + 1 / 45
    t = int(np.floor(0.5 * (times[i] + end) * 25))
    segment = first if t < first.end else second
    region = _placed(frames.shape[1:], segment.windows[t - segment.start], weight)
    np.testing.assert_array_equal(dubbed.frames[i][~region], frames[i][~region])
    changed += (dubbed.frames[i] != frames[i]).any(-1).sum()
  assert changed > 1000  # The mouths were replaced.

  assert dubbed.audio.shape == (source.num_frames * 640,)
  assert np.abs(dubbed.audio[:int(1.4 * 16000)]).max() > 0.2
  np.testing.assert_array_equal(dubbed.audio[int(1.52 * 16000):], 0.0)
  note = f"padded with {source.num_frames / 25 - 1.5:.2f} s of silence"
  assert any(note in n for n in dubbed.notes), dubbed.notes
  assert any("lower half of each crop" in n for n in dubbed.notes)  # talking_faces' mask.
  # The file keeps the variable frame times.
  path = str(tmp_path / "vfr.mkv")
  assert dubbing.write_video(path, zip(dubbed.times, dubbed.frames, dubbed.pasted),
                             source.width, source.height, dubbed.audio, source.frame_rate) == \
      len(times)
  out_times, out_frames = _source_frames(path)
  np.testing.assert_allclose(out_times, times, atol=1e-3)
  assert out_frames.shape == frames.shape


def test_cli_writes_the_source_timing_and_the_new_audio(run, videos, tmp_path):
  """gcm-generate --source_video: the file has the source's frame count, size and frame
  times (50 fps here) and an AAC track of the voice cut to the video's length."""
  voice = str(tmp_path / "voice.wav")
  video_io.write_wav(voice, 0.3 * np.sin(np.arange(16000) / 7.0))  # 1 s, the video 0.4 s
  output = str(tmp_path / "out" / "dubbed.mp4")
  summary = generate.generate_file(run, TEXT, voice, output, source_path=videos["short"],
                                   progress=False)
  assert summary.splitlines()[0] == (f"wrote {output}: 20 frames (0.40 s) at 256x192, the "
                                     f"source's frame times (average 50 fps)")
  assert "the voice (1.00 s) is longer than the video (0.40 s): cut to the video" in summary
  assert "dubbed 10 of 10 frames (25 fps) in 1 face segment(s)" in summary
  times, frames = _source_frames(videos["short"])
  out_times, out_frames = _source_frames(output)
  assert out_frames.shape == frames.shape
  np.testing.assert_allclose(out_times, times, atol=1e-4)
  with av.open(output) as container:
    (sound,) = container.streams.audio
    assert sound.codec_context.name == "aac" and sound.codec_context.sample_rate == 16000
    samples = sum(f.samples for f in container.decode(sound))
  assert abs(samples / 16000 - 0.4) < 0.07  # AAC pads up to a 1024-sample frame.


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> str:
  """The workdir of a run that does not dub (never loaded)."""
  path = tmp_path_factory.mktemp("plain")
  (path / "checkpoints").mkdir()
  with open(path / directory.CONFIG_FILE, "w", encoding="utf-8") as f:
    f.write(train_utils.micro_config().to_json())
  return str(path)


@pytest.mark.parametrize("source, workdir, extra, message", [
    ("no_face", "run", {}, r"--source_video .*no_face.mp4: no face found in any of its 15 "
                           r"frames \(25 fps\) by the 'lbp' detector"),
    ("two_people", "run", {}, r"two_people.mp4: a second person is in view wherever a face "
                              r"is found"),
    ("truncated", "run", {}, r"truncated.mp4: a damaged or truncated MP4/QuickTime file"),
    ("text", "run", {}, r"notes.mp4: not a video container PyAV can read: .*a text file "
                        r"starting 'these are not"),
    ("short", "plain", {}, r"^this run does not dub \(config.model.masked_source is False\)"
                           r".*drop --source_video$"),
    (None, "run", {}, r"^this run dubs a source video \(config.model.masked_source\): pass "
                      r"--source_video=VIDEO"),
    ("short", "run", {"reference_path": "photo.png"}, r"^--reference: a dubbing run takes its "
                                                      r"reference frames from --source_video"),
])
def test_bad_inputs_are_one_line_errors_before_the_model_loads(
    run, plain_run, videos, tmp_path, monkeypatch, source, workdir, extra, message):
  def never_load(path):
    raise AssertionError(f"the model of {path} was loaded")

  monkeypatch.setattr(diffusion_model, "load_trained", never_load)
  voice = str(tmp_path / "voice.wav")
  video_io.write_wav(voice, np.zeros(3200))
  with pytest.raises(ValueError, match=message) as error:
    generate.generate_file({"run": run, "plain": plain_run}[workdir], TEXT, voice,
                           str(tmp_path / "out.mp4"),
                           source_path=videos[source] if source else None, **extra)
  assert "\n" not in str(error.value)


def test_cli_error_is_one_line(run, tmp_path):
  voice = str(tmp_path / "voice.wav")
  video_io.write_wav(voice, np.zeros(3200))
  result = subprocess.run([sys.executable, "-m", "gcm_jax.generate", f"--workdir={run}",
                           f"--audio={voice}", f"--output={tmp_path}/o.mp4"],  # No --text.
                          cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert result.stderr.splitlines() == [
      "gcm-generate: this run dubs a source video (config.model.masked_source): pass "
      "--source_video=VIDEO (from Python: generate.dub)"]


def test_generate_re_voices_talking_faces_crops(run):
  """The Python API's generate with a talking-faces clip as the source and its own mask
  (`identity.source_mask`): the same path `dub` takes for each segment."""
  trained = diffusion_model.load_trained(run)
  clips = train_utils.talking_faces_clips("test", 1, 8, 32, trained.config.data.mel_alignment,
                                          96, 0, ("video", "source_mask", "audio"))
  crops = np.round((clips["video"][0] + 1) * 127.5).astype(np.uint8)
  mask = clips["source_mask"][0]  # The talking faces' own mask (identity.source_mask).
  assert mask.any() and not mask.all()
  video, wav = generate.generate(trained, TEXT, clips["audio"][0], 16000, jax.random.PRNGKey(1),
                                 progress=False, reference=crops[:1], source=crops,
                                 source_mask=mask)
  assert video.shape == (8, 32, 32, 3) and np.isfinite(video).all()
  assert wav.shape == (8 * 640,)
  with pytest.raises(ValueError, match="the source covers 4 frames but the audio needs 8"):
    generate.generate(trained, TEXT, clips["audio"][0], 16000, jax.random.PRNGKey(1),
                      progress=False, reference=crops[:1], source=crops[:4])
  with pytest.raises(ValueError, match=r"the source mask must be bool \[8, 32, 32\]"):
    generate.source_cond(trained.config, crops, mask[:, :16], 8)
  cond = generate.source_cond(trained.config, crops[:3], None, 5)  # Padded with the last.
  assert cond["source"].shape == (1, 5, 32, 32, 3) and cond["source_mask"].shape[-1] == 1
  np.testing.assert_array_equal(cond["source"][0, 4], cond["source"][0, 2])


def test_no_caption_is_the_dropped_caption(run):
  """`generate(text=None)` (the CLI without --text) gives the model the empty text, which it
  reads as the dropped caption: the output equals a real caption's with 'drop_text' set, and
  differs from the captioned one."""
  trained = diffusion_model.load_trained(run)
  config = trained.config
  encoders = frozen_encoders.FrozenEncoders(config)
  none = generate.text_cond(config, encoders, None)
  some = generate.text_cond(config, encoders, TEXT)
  assert {k: v.shape for k, v in none.items()} == {k: v.shape for k, v in some.items()}
  inputs = diffusion_model.example_inputs(config, 1)
  x = jax.random.normal(jax.random.PRNGKey(0), inputs["x"].shape)
  cond = {**inputs["cond"], "source": x[..., ::-1]}
  leaves, tree = jax.tree.flatten(trained.params)  # Noised: zero-initialized layers pass signal.
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [leaf + 0.05 * jax.random.normal(k, leaf.shape)
                                     for k, leaf in zip(keys, leaves)])
  out = lambda c: np.asarray(trained.apply_fn(params, x, inputs["t"] + 0.5, c))
  dropped = out({**cond, **some, "drop_text": np.ones(1, bool)})
  np.testing.assert_allclose(out({**cond, **none}), dropped, atol=1e-6)
  assert np.abs(out({**cond, **some}) - dropped).max() > 1e-6
