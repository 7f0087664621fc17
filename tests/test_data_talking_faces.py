"""Tests for the talking-faces generator: speech, visemes, captions, renderer, alignment."""
import numpy as np
import pytest

from gcm_jax.data import audio
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import corpus
from gcm_jax.data.talking_faces import example as example_lib
from gcm_jax.data.talking_faces import renderer
from gcm_jax.data.talking_faces import speech
from gcm_jax.data.talking_faces import visemes

PHRASE = "Papa bought a map, and Mama sees the moon."
ATTRS = captions.Attributes("green", "purple", "left")


def test_speech_is_16khz_with_ordered_phoneme_and_word_timings():
  utt = speech.synthesize(PHRASE, "en-us", 160)
  assert utt.wav.dtype == np.float32 and utt.wav.ndim == 1
  assert 1.5 < utt.duration < 4.0
  starts = [p.start for p in utt.phonemes]
  assert starts == sorted(starts) and utt.phonemes[-1].end == pytest.approx(utt.duration)
  assert [w.text for w in utt.words] == ["Papa", "bought", "a", "map", "and", "Mama", "sees",
                                         "the", "moon"]
  assert not any(p.name.startswith(("'", ",")) for p in utt.phonemes)
  accented = speech.synthesize("Café crème is très nice.", "en-us", 160)
  assert [w.text for w in accented.words] == ["Café", "crème", "is", "très", "nice"]


def test_speech_energy_follows_phoneme_timings():
  utt = speech.synthesize(PHRASE, "en-us+f2", 130)
  sr = audio.SAMPLE_RATE

  def rms(p):
    seg = utt.wav[int(p.start * sr):int(p.end * sr)]
    return float(np.sqrt(np.mean(seg ** 2))) if seg.size else 0.0
  vowels = [rms(p) for p in utt.phonemes
            if visemes.phoneme_to_viseme(p.name) in visemes.VOWEL_VISEMES and
            p.end - p.start > 0.05]
  pauses = [rms(p) for p in utt.phonemes if speech.is_pause(p.name) and p.end - p.start > 0.05]
  assert vowels and pauses
  assert min(vowels) > 10 * max(pauses)


def test_rate_changes_duration_and_voices_differ():
  slow = speech.synthesize(PHRASE, "en-us", 130)
  fast = speech.synthesize(PHRASE, "en-us", 190)
  assert fast.duration < 0.85 * slow.duration
  other = speech.synthesize(PHRASE, "en-us+f2", 130)
  n = min(len(slow.wav), len(other.wav))
  assert not np.allclose(slow.wav[:n], other.wav[:n], atol=1e-2)


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_script_raises(text):
  with pytest.raises(ValueError, match="empty"):
    speech.synthesize(text)
  with pytest.raises(ValueError, match="empty"):
    example_lib.generate_example(text, ATTRS)


def test_bad_voice_rate_resolution_frames_raise():
  with pytest.raises(ValueError, match="voice"):
    speech.synthesize("hello", "xx-nope")
  with pytest.raises(ValueError, match="rate"):
    speech.synthesize("hello", "en-us", 1000)
  with pytest.raises(ValueError, match="resolution"):
    example_lib.generate_example("hello", ATTRS, resolution=48)
  with pytest.raises(ValueError, match="num_frames"):
    example_lib.generate_example("hello", ATTRS, num_frames=0)


def test_phoneme_to_viseme():
  for name in ("p", "b", "m"):
    assert visemes.phoneme_to_viseme(name) == visemes.PBM
  assert visemes.VISEMES[visemes.phoneme_to_viseme("A:")].name == "AA"
  assert visemes.VISEMES[visemes.phoneme_to_viseme("u:")].name == "UW"
  assert visemes.VISEMES[visemes.phoneme_to_viseme("a#")].name == "SCHWA"
  assert visemes.phoneme_to_viseme("_:") == visemes.SIL
  assert visemes.VISEMES[visemes.phoneme_to_viseme("f")].name == "FV"


def test_captions_round_trip_and_errors():
  for motion in captions.MOTIONS:
    attrs = captions.Attributes("red", "blue", motion)
    caption = captions.make_caption(attrs, "Bob moved the boat.")
    assert captions.parse_caption(caption) == (attrs, "Bob moved the boat.")
  assert captions.make_caption(ATTRS, "hi") == (
      "a green face on a purple background, moving left, says: hi")
  with pytest.raises(ValueError, match="differ"):
    captions.Attributes("red", "red", "still")
  with pytest.raises(ValueError, match="face_color"):
    captions.Attributes("teal", "red", "still")
  with pytest.raises(ValueError, match="does not follow"):
    captions.parse_caption("a face says hi")
  with pytest.raises(ValueError, match="empty"):
    captions.make_caption(ATTRS, " ")


@pytest.mark.parametrize("voice,rate", [("en-us", 130), ("en-gb-x-rp+f4", 190),
                                        ("en-029+f3", 160)])
def test_mouth_open_on_vowels_and_closed_on_bilabials(voice, rate):
  ex = example_lib.generate_example(PHRASE, ATTRS, voice, rate, resolution=64, num_frames=75,
                                    seed=0, clip_start=0.0)
  t_frames = len(ex.mouth_open)
  checked_closed = checked_open = 0
  for p in ex.phonemes:
    vis = visemes.phoneme_to_viseme(p.name)
    if vis == visemes.PBM and p.end - p.start >= 0.02:
      t = int((p.start + p.end) / 2 * 25)
      if t < t_frames:
        assert ex.mouth_open[t] < 0.1, (p, t, ex.mouth_open[t])
        assert ex.visemes[t] == visemes.PBM
        checked_closed += 1
    if vis in visemes.VOWEL_VISEMES:
      for t in range(int(np.ceil(p.start * 25)), int(np.floor(p.end * 25))):
        if t < t_frames and (t + 1) / 25 <= p.end:  # Frame fully inside the vowel.
          assert ex.mouth_open[t] > 0.3, (p, t, ex.mouth_open[t])
          assert ex.visemes[t] in visemes.VOWEL_VISEMES
          checked_open += 1
  assert checked_closed >= 5 and checked_open >= 5
  # Per-frame labels agree: the viseme of the frame's center phoneme, or closed lips.
  for t, name in enumerate(ex.frame_phonemes):
    assert ex.visemes[t] in (visemes.PBM, visemes.phoneme_to_viseme(name)), (t, name)


def test_video_and_keypoints_follow_mouth_open():
  ex = example_lib.generate_example(PHRASE, ATTRS, "en-us", 130, resolution=128, num_frames=60,
                                    seed=3, clip_start=0.0)
  kp = ex.keypoints
  assert kp.shape == (60, renderer.NUM_KEYPOINTS, 2) and kp.min() >= 0 and kp.max() <= 1
  top, bottom = renderer.KEYPOINT_NAMES.index("mouth_top"), renderer.KEYPOINT_NAMES.index(
      "mouth_bottom")
  gap = kp[:, bottom, 1] - kp[:, top, 1]
  assert np.corrcoef(gap, ex.mouth_open)[0, 1] > 0.999
  # Dark mouth-interior pixels inside the mouth keypoints' box: many when open, none closed.
  dark = (ex.video.astype(int).sum(-1) < 120)
  open_t, closed_t = int(np.argmax(ex.mouth_open)), int(np.argmin(ex.mouth_open))
  assert ex.mouth_open[closed_t] == 0.0 and ex.mouth_open[open_t] > 0.9
  below_nose = int(kp[closed_t, renderer.KEYPOINT_NAMES.index("nose"), 1] * 128) + 3
  assert dark[closed_t, below_nose:].sum() == 0  # Closed lips hide the mouth interior.
  x0, y0 = (kp[open_t, renderer.KEYPOINT_NAMES.index("mouth_left")] * 128).astype(int)
  x1 = int(kp[open_t, renderer.KEYPOINT_NAMES.index("mouth_right"), 0] * 128)
  y_top, y_bot = (kp[open_t, [top, bottom], 1] * 128).astype(int)
  assert dark[open_t, y_top:y_bot, x0:x1].mean() > 0.5
  assert dark[open_t, below_nose:].sum() > 100


def test_audio_clip_is_the_utterance_at_clip_start_on_the_640_sample_grid():
  ex = example_lib.generate_example(PHRASE, ATTRS, "en-us", 160, num_frames=16, seed=1)
  utt = speech.synthesize(PHRASE, "en-us", 160)
  start = int(round(ex.clip_start * audio.SAMPLE_RATE))
  assert ex.audio.shape == (16 * 640,)
  np.testing.assert_array_equal(ex.audio, utt.wav[start:start + 16 * 640])
  # Phonemes are reported in clip time.
  assert ex.phonemes[0].start == pytest.approx(utt.phonemes[0].start - ex.clip_start)
  # The clip contains speech and its script is a run of the phrase's words.
  assert np.abs(ex.audio).max() > 0.3
  assert ex.script in " ".join(w.text for w in utt.words)
  assert ex.caption.endswith("says: " + ex.script)


def test_colors_background_and_motion_match_the_caption():
  attrs = captions.Attributes("yellow", "blue", "up")
  ex = example_lib.generate_example("Bob moved the big blue boat.", attrs, num_frames=16,
                                    resolution=64, seed=2)
  face = captions.COLOR_RGB[attrs.face_color_id].astype(int)
  bg = captions.COLOR_RGB[attrs.background_color_id].astype(int)
  cheek = ex.video[0, int(ex.keypoints[0, 2, 1] * 64), int(ex.keypoints[0, 0, 0] * 64) - 4]
  assert np.abs(cheek.astype(int) - face).max() <= 3
  assert np.abs(ex.video[0, 32, 1].astype(int) - bg).max() <= 16  # Gradient-shaded.
  nose_y = ex.keypoints[:, 2, 1]
  assert nose_y[-1] < nose_y[0] - 0.2  # Moving up.
  np.testing.assert_allclose(ex.keypoints[:, 2, 0], ex.keypoints[0, 2, 0])


def test_same_seed_same_example_and_different_seed_differs():
  a = example_lib.generate_example(PHRASE, ATTRS, seed=5)
  b = example_lib.generate_example(PHRASE, ATTRS, seed=5)
  c = example_lib.generate_example(PHRASE, ATTRS, seed=6)
  np.testing.assert_array_equal(a.video, b.video)
  np.testing.assert_array_equal(a.audio, b.audio)
  assert a.clip_start != c.clip_start


def test_blinks_close_the_eyes():
  eye = renderer.blink_track(200, np.random.default_rng(0))
  assert eye.min() < 0.1 and (eye == 1).mean() > 0.8


def test_splits_hold_out_phrases_and_voices():
  train_p, train_v = map(set, corpus.SPLITS["train"])
  for split in ("validation", "test"):
    phrases, voices = map(set, corpus.SPLITS[split])
    assert not phrases & train_p and not voices & train_v
  assert not set(corpus.VALIDATION_VOICES) & set(corpus.TEST_VOICES)


def test_paraphrases_keep_the_attributes_in_new_wording():
  from gcm_jax.data.talking_faces import captions  # pylint: disable=g-import-not-at-top
  caption = "a green face on a purple background, moving left, says: Papa bought a map."
  assert captions.paraphrase(caption, "template") == caption
  assert captions.paraphrase(caption, "reordered") == (
      "on a purple background, a green face, it moves left and says: Papa bought a map.")
  assert captions.paraphrase(caption, "predicative") == (
      "the face is green and the background is purple; it moves left; it says: Papa bought a "
      "map.")
  assert captions.paraphrase(caption, "synonyms") == (
      "an emerald face on a violet background, moving left, says: Papa bought a map.")
  for style in ("reordered", "predicative", "synonyms"):  # Never the training template.
    with pytest.raises(ValueError, match="does not follow|must be one of"):
      captions.parse_caption(captions.paraphrase(caption, style))
  with pytest.raises(ValueError, match="unknown paraphrase style 'formal'"):
    captions.paraphrase(caption, "formal")
