"""Tests for the Wav2Lip-convention log-mel front end (gcm_jax/data/audio.py)."""
import numpy as np
import pytest

from gcm_jax.data import audio

SR = audio.SAMPLE_RATE


def _tone(freq: float, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_slaney_mel_scale_formulas():
  # Linear below 1 kHz (f / (200/3)), log above with 27 steps per factor 6.4.
  np.testing.assert_allclose(audio.hz_to_mel(500.0), 7.5)
  np.testing.assert_allclose(audio.hz_to_mel(1000.0), 15.0)
  np.testing.assert_allclose(audio.hz_to_mel(6400.0), 15.0 + 27.0)
  hz = np.array([0.0, 55.0, 999.0, 1000.0, 4321.0, 7600.0])
  np.testing.assert_allclose(audio.mel_to_hz(audio.hz_to_mel(hz)), hz, atol=1e-9)


def test_mel_filterbank_shape_and_slaney_area_normalization():
  fb = audio.mel_filterbank()
  assert fb.shape == (80, 401)
  assert (fb >= 0).all()
  freqs = np.linspace(0, SR / 2, 401)
  assert fb[:, freqs < audio.FMIN].max() == 0 and fb[:, freqs > audio.FMAX].max() == 0
  # Each triangle has unit area in Hz (height 2 / width * width / 2); check the wide
  # filters, which are well sampled by the 20 Hz FFT grid.
  areas = fb.sum(axis=1) * (SR / audio.N_FFT)
  np.testing.assert_allclose(areas[40:], 1.0, rtol=0.02)
  # Peaks in increasing frequency order.
  assert (np.diff(fb.argmax(axis=1)) >= 0).all()


def test_stft_matches_float64_dft_reference():
  rng = np.random.default_rng(0)
  wav = rng.uniform(-1, 1, 3000)
  mag = audio.stft_magnitude(wav)
  assert mag.shape == (1 + 3000 // 200, 401)
  padded = np.pad(wav, 400, mode="reflect")
  n = np.arange(800)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 800)
  dft = np.exp(-2j * np.pi * np.outer(np.arange(401), n) / 800)
  for m in (0, 7, 15):
    ref = np.abs(dft @ (padded[m * 200:m * 200 + 800] * window))
    np.testing.assert_allclose(mag[m], ref, rtol=1e-9, atol=1e-9)


def test_preemphasis_matches_lfilter():
  signal = pytest.importorskip("scipy.signal")
  x = np.random.default_rng(1).normal(size=(2, 500))
  np.testing.assert_allclose(audio.preemphasis(x), signal.lfilter([1, -0.97], [1], x, axis=-1))


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_pure_tone_energy_in_right_mel_bin(freq):
  mel = audio.melspectrogram(_tone(freq))
  assert mel.shape == (1 + 8000 // 200, 80)
  centers = audio.mel_to_hz(
      np.linspace(audio.hz_to_mel(audio.FMIN), audio.hz_to_mel(audio.FMAX), 82))[1:-1]
  expected = np.argmin(np.abs(centers - freq))
  peak = mel[5:-5].mean(axis=0).argmax()
  assert abs(int(peak) - int(expected)) <= 1, (peak, expected)


def test_normalization_formula_and_range():
  # Silence -> floor 1e-5 -> -100 dB - 20 -> clipped to -4.
  np.testing.assert_allclose(audio.melspectrogram(np.zeros(1600)), -4.0)
  # Direct formula: amplitude a -> 8 * (20 log10 a - 20 + 100) / 100 - 4.
  for amp in (1e-3, 0.1, 1.0):
    expected = 8 * (20 * np.log10(amp) - 20 + 100) / 100 - 4
    np.testing.assert_allclose(audio.amp_to_normalized_db(np.array(amp)), expected)
  loud = audio.melspectrogram(_tone(1000.0, amp=1.0) * 50)
  assert loud.max() == 4.0 and loud.min() >= -4.0


def test_numpy_and_jax_agree_batched():
  rng = np.random.default_rng(2)
  wav = (0.3 * rng.normal(size=(3, 10240))).astype(np.float32)
  wav[1] = _tone(440.0, 10240 / SR)
  ref = audio.melspectrogram(wav)
  out = np.asarray(audio.melspectrogram_jax(wav))
  assert out.shape == ref.shape == (3, 52, 80)
  np.testing.assert_allclose(out, ref, atol=2e-3)


@pytest.mark.parametrize("fn", [audio.melspectrogram, audio.melspectrogram_jax])
def test_bad_sample_rate_raises_with_hint(fn):
  with pytest.raises(ValueError, match=r"16000 Hz, got 22050 Hz.*resample"):
    fn(np.zeros(4000, np.float32), sample_rate=22050)


def test_too_short_audio_raises():
  with pytest.raises(ValueError, match="samples"):
    audio.melspectrogram(np.zeros(100))


def test_resample_keeps_tone_frequency_and_length():
  sr_in = 22050
  t = np.arange(sr_in) / sr_in
  x = np.sin(2 * np.pi * 1000 * t)
  y = audio.resample(x, sr_in, SR)
  assert y.shape == (SR,) and y.dtype == np.float32
  spec = np.abs(np.fft.rfft(y))
  assert abs(spec.argmax() * SR / len(y) - 1000) <= 1
  ref = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR)
  np.testing.assert_allclose(y[100:-100], ref[100:-100], atol=1e-3)


def test_window_starts_alignment():
  # 'start' is Wav2Lip's crop_audio_window: int(80 * t / 25).
  np.testing.assert_array_equal(audio.window_starts(6, 16, "start"),
                                [int(80. * t / 25.) for t in range(6)])
  # 'center': the window's middle is the frame's middle time (t + 0.5) / 25.
  starts = audio.window_starts(50, 16, "center")
  mid_time = (starts + 8) / 80
  np.testing.assert_allclose(mid_time, (np.arange(50) + 0.5) / 25, atol=0.5 / 80 + 1e-9)
  with pytest.raises(ValueError, match="alignment"):
    audio.window_starts(4, 16, "middle")


def test_frame_windows_pick_the_right_mel_frames_and_pad_with_silence():
  num_frames = 16
  mel = np.arange(audio.num_mel_frames(num_frames * 640), dtype=np.float32)
  mel = np.repeat(mel[:, None], 80, axis=1)
  win = audio.frame_windows(mel[None], num_frames, 16, "center")
  assert win.shape == (1, num_frames, 16, 80)
  starts = audio.window_starts(num_frames, 16, "center")
  for t in range(num_frames):
    for w in range(16):
      m = starts[t] + w
      expected = m if 0 <= m < mel.shape[0] else audio.SILENCE_VALUE
      assert win[0, t, w, 0] == expected
  start = audio.frame_windows(mel, num_frames, 16, "start")
  np.testing.assert_array_equal(start[3, :, 0], np.arange(9, 25))


def test_tone_burst_lands_in_the_frame_window_of_its_video_frame():
  # A 1 kHz burst during video frame 10 only: the centered window of frame 10 sees it in
  # its middle; frame 2's window sees silence.
  wav = np.zeros(16 * 640, np.float32)
  wav[10 * 640:11 * 640] = _tone(1000.0, 640 / SR, amp=0.8)
  win = audio.frame_windows(audio.melspectrogram(wav), 16, 16, "center")
  energy = win.mean(axis=-1)  # [T, W]
  assert energy[10, 6:10].min() > energy[2].max() + 2.0
  assert energy[10].argmax() in range(5, 11)
