"""Evaluation helpers: color read-out is exact on ground-truth renders."""
import numpy as np
import pytest

from gcm_jax import evaluate
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import face_parts
from gcm_jax.data.talking_faces import ground_truth
from gcm_jax.models import diffusion_model
from gcm_jax.models import sync_offsets
from gcm_jax.models import trained_syncnet
from tests import train_utils

# The clip features evaluation reads on the talking faces (with their ground truth).
KEYS = evaluate.eval_keys(train_utils.micro_config())


def test_nearest_color_recovers_palette():
  palette = captions.COLOR_RGB.astype(np.float32) / 127.5 - 1.0
  np.testing.assert_array_equal(ground_truth.nearest_color(palette), np.arange(len(palette)))
  np.testing.assert_array_equal(ground_truth.nearest_color(palette * 0.97), np.arange(len(palette)))


def test_read_colors_on_ground_truth_clips():
  clips = train_utils.talking_faces_clips("test", 6, 8, 32, "center", 160, seed=3,
                                          keys=KEYS)
  face, background = ground_truth.read_colors(clips["video"], clips["keypoints"])
  np.testing.assert_array_equal(face, clips["face_color"])
  np.testing.assert_array_equal(background, clips["background_color"])
  # Swapping the videos breaks the agreement: the read-out depends on the pixels.
  swapped, _ = ground_truth.read_colors(clips["video"][::-1], clips["keypoints"])
  assert np.mean(swapped == clips["face_color"]) < 1.0


def test_condition_usage_of_an_untrained_model():
  """At init the model outputs 0, so x0_hat = alpha * x_t: colors are read from x_t at low
  noise whatever the text, and the audio changes nothing."""
  import jax  # pylint: disable=g-import-not-at-top
  config = train_utils.micro_config()
  config.data.num_frames = 8
  model = diffusion_model.make_model(config)
  inputs = diffusion_model.example_inputs(config, batch_size=1)
  params = model.init(jax.random.PRNGKey(0), inputs["x"], inputs["t"], inputs["cond"])["params"]
  trained = diffusion_model.TrainedModel(config, diffusion_model.make_apply_fn(config),
                                  jax.tree.map(np.asarray, params))
  clips = train_utils.talking_faces_clips("test", 4, 8, 32, "center", config.model.text_max_len,
                                          seed=3, keys=KEYS)
  rows = evaluate.condition_usage(trained, clips, (0.02, 0.98), jax.random.PRNGKey(0))
  assert [r["t"] for r in rows] == [0.02, 0.98]
  low, high = rows
  assert low["logsnr"] > high["logsnr"]
  for name in ("full", "no_text"):
    assert low[f"face_color_accuracy_{name}"] == 1.0
    assert low[f"background_color_accuracy_{name}"] == 1.0
  assert low["mouth_corr_full"] > 0.5
  for row in rows:
    assert row["mouth_corr_full"] == row["mouth_corr_shuffled_audio"]
  # benchmarks.fidelity_sweep --condition_levels prints these rows.
  from benchmarks import fidelity_sweep  # pylint: disable=g-import-not-at-top
  table = fidelity_sweep.condition_table(trained, clips, [0.02], 0).splitlines()
  assert len(table) == 3 and table[2].startswith("| 0.02 | ")
  assert table[2].endswith("| 1.00 / 1.00 | 1.00 / 1.00 |")


def test_sampling_trajectory_reads_every_denoiser_call_then_the_sample():
  import jax  # pylint: disable=g-import-not-at-top
  from gcm_jax import sampling  # pylint: disable=g-import-not-at-top
  from gcm_jax.diffusion import samplers  # pylint: disable=g-import-not-at-top
  config = train_utils.micro_config()
  config.data.num_frames = 8
  config.sampling.update(sampler="euler", spacing="karras", num_steps=4, s_churn=0.0)
  model = diffusion_model.make_model(config)
  inputs = diffusion_model.example_inputs(config, batch_size=1)
  params = model.init(jax.random.PRNGKey(1), inputs["x"], inputs["t"], inputs["cond"])["params"]
  # At init the model outputs 0 and x0_hat = alpha * x_t: each call's estimate differs.
  trained = diffusion_model.TrainedModel(config, diffusion_model.make_apply_fn(config), params)
  clips = train_utils.talking_faces_clips("test", 6, 8, 32, "center", config.model.text_max_len,
                                          seed=4, keys=KEYS)
  key = jax.random.PRNGKey(2)
  times, estimates, videos = evaluate.x0_estimates(trained, clips, key, batch_size=4)
  cfg = sampling.sampler_config(config)
  assert estimates.shape == (samplers.nfe(cfg), 6, 8, 32, 32, 3) == (4, 6, 8, 32, 32, 3)
  np.testing.assert_allclose(times, samplers.grid(cfg)[0], rtol=1e-6)
  # The same sampler compiled inside another program (the recording wrapper): XLA may fuse
  # and order its float32 arithmetic differently, a few roundings (eps * |x|, |x| <= 1 after
  # clipping) per sampler step.
  np.testing.assert_allclose(videos, evaluate.generate_for_clips(trained, clips, key, 4),
                             atol=4 * samplers.nfe(cfg) * np.finfo(np.float32).eps, rtol=0)
  # Euler's last step lands on its x0 estimate, in both batches; earlier estimates differ.
  np.testing.assert_allclose(estimates[-1], videos, atol=1e-5)
  assert np.abs(estimates[0] - videos).mean() > 1e-3
  rows = evaluate.sampling_trajectory(trained, clips, key, batch_size=4)
  assert [r["t"] for r in rows] == [*times, 0.0]
  want = ground_truth.color_accuracy(estimates[1], clips)
  assert (rows[1]["face_color_accuracy"], rows[1]["background_color_accuracy"]) == (
      want["face"], want["background"])
  from benchmarks import fidelity_sweep  # pylint: disable=g-import-not-at-top
  table = fidelity_sweep.trajectory_table(trained, clips, {"num_steps": 3}, 2).splitlines()
  assert len(table) == 2 + 3 + 1 and table[-1].startswith("| sample | 0.000 | ")
  longer = train_utils.talking_faces_clips("test", 2, 12, 32, "center", config.model.text_max_len,
                                           seed=4, keys=KEYS)
  with pytest.raises(ValueError, match="one sampling window"):
    evaluate.x0_estimates(trained, longer, key)


def _syncnet_workdir(path) -> str:
  """A small SyncNet with random weights saved as train_syncnet exports it (syncnet_params/ +
  report.json with its config)."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from gcm_jax.configs import syncnet as syncnet_config  # pylint: disable=g-import-not-at-top
  from gcm_jax.runs import export  # pylint: disable=g-import-not-at-top
  config = syncnet_config.get_config()
  config.model.update(embed_dim=16, visual_widths=(8, 16), audio_widths=(8, 16))
  shapes = jax.eval_shape(trained_syncnet.build_syncnet(config).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 5, 16, 32, 3)), jnp.zeros((1, 16, 80)))
  rng = np.random.default_rng(0)  # random values: an eager init takes seconds on CPU
  variables = jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(s.dtype), shapes)
  export.save_params(os.path.join(path, trained_syncnet.SYNCNET_FILE), variables)
  with open(os.path.join(path, trained_syncnet.REPORT_FILE), "w", encoding="utf-8") as f:
    json.dump({"report": {}, "config": config.to_dict()}, f)
  return str(path)


def _stub_model(monkeypatch):
  """evaluate with the model stubbed out (generation = the test clips + noise; generation,
  condition_usage and the paraphrased captions are tested here and in test_control_run).
  Returns (config, noise)."""
  config = train_utils.micro_config()
  monkeypatch.setattr(diffusion_model, "load_trained",
                      lambda workdir: diffusion_model.TrainedModel(config, None, None))
  noise = np.random.default_rng(0).normal(0, 0.1, (4, 8, 32, 32, 3)).astype(np.float32)
  monkeypatch.setattr(evaluate, "generate_for_clips",
                      lambda trained, clips, key: np.clip(clips["video"] + noise, -1, 1))
  monkeypatch.setattr(evaluate, "condition_usage", lambda *args: [])
  monkeypatch.setattr(evaluate, "paraphrased_caption_match", lambda *args: {})
  return config, noise


def test_evaluate_report_has_the_fidelity_rows(tmp_path, monkeypatch):
  """An untrained SyncNet: the report's fidelity rows and their ground-truth floor."""
  import json  # pylint: disable=g-import-not-at-top
  from gcm_jax.alignment import fidelity  # pylint: disable=g-import-not-at-top
  from gcm_jax.diffusion import extension  # pylint: disable=g-import-not-at-top
  config, noise = _stub_model(monkeypatch)
  (tmp_path / "syncnet").mkdir()
  syncnet_workdir = _syncnet_workdir(tmp_path / "syncnet")
  report = evaluate.evaluate("unused", {"syncnet_workdir": syncnet_workdir}, num_clips=4,
                             clip_frames=8)
  json.dumps(report)  # JSON-able, as _main writes it
  fid = report["fidelity"]
  assert fid["feature_network"] == "SyncNet-feature FD, not comparable with published FID"
  assert fid["halves"] == [2, 2]
  # seam_ratio: 8-frame clips from the micro config's shorter windows.
  rows = ("hf_ratio", "hf_energy_ratio", "flicker_ratio", "patch_grid_ratio", "seam_ratio",
          "syncnet_fd_window", "syncnet_fd_clip")
  assert config.data.num_frames < 8
  for name in ("generated", "ground_truth_floor"):
    assert sorted(fid[name]) == sorted(rows)
    assert all(np.isfinite(v) and v >= 0 for v in fid[name].values())
  for row in ("generated_matched", "generated_shuffled", "ground_truth_matched",
              "ground_truth_shuffled"):
    assert sorted(report[row]) == ["lse_c", "lse_d", "mouth_corr"]
  assert set(report["color_accuracy"]) == {"generated", "ground_truth"}
  assert list(report["skipped"]) == ["lse_syncnet_python", "fid", "fvd"]
  # Rows: generated half A vs ground truth half B; the floor: ground truth A vs B.
  gt = train_utils.talking_faces_clips("test", 4, 8, 32, "center", config.model.text_max_len, 0,
                                       keys=("video",))["video"]
  generated = np.clip(gt + noise, -1, 1)
  assert fid["ground_truth_floor"]["hf_ratio"] == fidelity.ratio(
      fidelity.laplacian_abs(gt[:2]), fidelity.laplacian_abs(gt[2:]))
  assert fid["generated"]["flicker_ratio"] == fidelity.ratio(
      fidelity.flicker(generated[:2]), fidelity.flicker(gt[2:]))
  seams = extension.seam_frames(8, config.data.num_frames, config.diffusion.max_motion_frames)
  assert fid["ground_truth_floor"]["seam_ratio"] == fidelity.seam_ratio(gt[:2], seams)
  patch = config.model.patch_size  # A pixel run: the grid's period in pixels.
  assert evaluate.pixel_patch(config) == patch
  assert fid["generated"]["patch_grid_ratio"] == fidelity.ratio(
      fidelity.patch_grid_energy(generated[:2], patch), fidelity.patch_grid_energy(gt[2:], patch))
  assert fid["laplacian_abs_255"]["ground_truth"] == pytest.approx(
      127.5 * fidelity.laplacian_abs(gt))
  assert fid["generated"]["hf_ratio"] > 2 * fid["ground_truth_floor"]["hf_ratio"]
  # Face structure: the dataset's hook on each video set, summarized per row.
  structure = report["face_structure"]
  assert sorted(structure) == ["generated", "ground_truth"]  # No dubbing: no re-voiced row.
  for row, video in (("ground_truth", gt), ("generated", generated)):
    parts = face_parts.face_parts(video)
    placed = parts["mouth_placed"][~np.isnan(parts["mouth_placed"])]
    assert structure[row] == pytest.approx({
        "eyes_present": parts["eyes"].mean(), "outline_iou": parts["outline_iou"].mean(),
        "mouth_visible": len(placed) / parts["eyes"].size, "mouth_placed": placed.mean()})
  assert structure["ground_truth"]["eyes_present"] >= 0.9
  assert structure["ground_truth"]["outline_iou"] >= 0.97
  with pytest.raises(ValueError, match="num_clips must be >= 4"):
    evaluate.evaluate("unused", {"syncnet_workdir": syncnet_workdir}, num_clips=3)
  with pytest.raises(ValueError, match="unknown weights"):
    evaluate.evaluate("unused", {"inception_weights": "x"})


def test_metrics_without_weights_are_skipped_and_the_reports_written(tmp_path, monkeypatch):
  """No network weights: no network metric is in the report, each is under `skipped` with
  its flag; eval.json, eval.md (ground-truth rows before generated rows) and the frame grid
  are written."""
  import json  # pylint: disable=g-import-not-at-top
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  _stub_model(monkeypatch)
  out = tmp_path / "out"
  report = evaluate.evaluate("unused", {}, num_clips=4, clip_frames=8, output_dir=str(out))
  config = diffusion_model.load_trained("unused").config
  applies = {flag: m for flag, m in evaluate.NETWORK_METRICS.items() if m.applies(config)}
  assert "arcface_weights" not in applies  # CSIM: no person conditions in this run.
  assert sorted(report["skipped"]) == sorted(m.metrics for m in applies.values())
  for flag, metric in applies.items():
    assert report["skipped"][metric.metrics].startswith(f"no --{flag} given")
  assert "lse_d" not in report["generated_matched"] and "lse_syncnet_python" not in report
  fid = report["fidelity"]
  assert "feature_network" not in fid
  assert sorted(fid["generated"]) == ["flicker_ratio", "hf_energy_ratio", "hf_ratio",
                                      "patch_grid_ratio", "seam_ratio"]
  with open(out / "eval.json", encoding="utf-8") as f:
    assert json.load(f) == json.loads(json.dumps(report))
  md = (out / "eval.md").read_text(encoding="utf-8")
  assert md.index("ground truth A vs ground truth B (floor)") < md.index(
      "generated A vs ground truth B")
  assert md.index("| ground truth, matched audio |") < md.index("| generated, matched audio |")
  assert "LSE with syncnet_python" not in md  # Skipped: no empty table.
  for metric, why in report["skipped"].items():
    assert f"* `{metric}`: {why}" in md
  grid = iio.imread(out / "eval_frames.png")
  # 4 clips x (generated, real) rows of 6 frames, 32 px x 2 + 1-px borders.
  assert grid.shape == (4 * 2 * 66, 6 * 66, 3) and grid.dtype == np.uint8
  np.testing.assert_array_equal(
      grid[66 + 1:66 + 65:2, 1:65:2], evaluate.video_io.to_uint8(
          train_utils.talking_faces_clips("test", 1, 8, 32, "center", 96, 0, keys=("video",))
          ["video"][0, 0]))


def test_lse_weights_end_to_end(tmp_path, monkeypatch):
  """`--lse_weights` with a random-weight syncnet_v2.model (written by torch): the
  syncnet_python rows are in the report and in eval.md, next to the project SyncNet's."""
  torch = pytest.importorskip("torch")
  from tests import syncnet_references as ref  # pylint: disable=g-import-not-at-top
  _stub_model(monkeypatch)
  path = str(tmp_path / "syncnet_v2.model")
  torch.save(ref.randomize(ref.S(), seed=0).state_dict(), path)
  (tmp_path / "syncnet").mkdir()
  report = evaluate.evaluate(
      "unused", {"lse_weights": path, "syncnet_workdir": _syncnet_workdir(tmp_path / "syncnet")},
      num_clips=4, clip_frames=8, output_dir=str(tmp_path / "out"))
  got = report["lse_syncnet_python"]
  assert got["input"] == "32x32 frames resized to 224x224 (bilinear)"
  for row in ("generated", "ground_truth"):
    assert np.isfinite(got[row]["lse_d"]) and np.isfinite(got[row]["lse_c"])
    assert len(got[row]["offsets"]) == 4
  assert sorted(report["skipped"]) == ["fid", "fvd"]  # Their weights were not given.
  md = (tmp_path / "out" / "eval.md").read_text(encoding="utf-8")
  assert f"| generated | {got['generated']['lse_d']:.4g} | {got['generated']['lse_c']:.4g} |" in md
  assert "LSE-D 6.386, LSE-C 7.789" in md and "not comparable" in md


def test_lse_reads_back_a_5_frame_audio_shift():
  """The project's LSE with a SyncNet trained for 500 steps (tests/fixtures/syncnet_tiny, see
  its README) on held-out clips: delaying the audio by 5 frames reads offset -5 on every clip
  (advancing it: +5), LSE-D rises on every clip and the mean LSE-C (confidence) drops."""
  import os  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  fixture = os.path.join(os.path.dirname(__file__), "fixtures", "syncnet_tiny")
  net, variables = trained_syncnet.load_matching_syncnet(
      fixture, ml_collections.ConfigDict(dict(resolution=32, mel_window=16)))
  clips = train_utils.talking_faces_clips("test", 4, 40, 32, "center", 160, seed=0,
                                          keys=("video", "mel"))
  video, mel = jnp.asarray(clips["video"]), jnp.asarray(clips["mel"])
  lse = jax.jit(lambda m: sync_offsets.lse_metrics(net, variables, video, m, audio_frame_offset=2))
  aligned = lse(mel)
  np.testing.assert_array_equal(aligned["offset"], 0)
  for delay in (5, -5):
    shifted = lse(sync_offsets.shift_mel_windows(mel, delay))
    np.testing.assert_array_equal(shifted["offset"], -delay)
    assert np.all(shifted["lse_d"] > aligned["lse_d"])
    assert float(jnp.mean(shifted["lse_c"])) < float(jnp.mean(aligned["lse_c"]))


def test_paraphrased_captions_reach_the_generator(monkeypatch):
  """Each style's caption is what the model is conditioned on: a stub generator that draws
  the test clip only when given the template caption's tokens (grey otherwise) scores the
  template at the ground truth's accuracy and every paraphrase at 0."""
  import jax  # pylint: disable=g-import-not-at-top
  from gcm_jax.data.talking_faces import captions  # pylint: disable=g-import-not-at-top
  config = train_utils.micro_config()
  config.model.text_max_len = config.data.text_max_len = 128
  clips = evaluate.test_clips(config, 6, 4, 0, KEYS)
  template = clips["text_tokens"]

  def stub(trained, cond, key):
    del trained, key
    same = np.all(cond["text_tokens"] == template, axis=1)[:, None, None, None, None]
    return np.where(same, cond["video"], 0.0)

  monkeypatch.setattr(evaluate, "generate_for_clips", stub)
  got = evaluate.paraphrased_caption_match(diffusion_model.TrainedModel(config, None, None), clips,
                                            jax.random.PRNGKey(0))
  assert sorted(got) == sorted(captions.PARAPHRASES)
  gt_face, gt_background = ground_truth.read_colors(clips["video"], clips["keypoints"])
  assert got["template"] == {"face": np.mean(gt_face == clips["face_color"]),
                             "background": np.mean(gt_background == clips["background_color"])}
  assert got["template"]["face"] == 1.0
  for style in ("reordered", "predicative", "synonyms"):
    assert got[style]["face"] < 0.5, (style, got[style])


@pytest.mark.slow  # ~130 Inception passes at 299x299: minutes on 2 CPU cores.
def test_fid_with_published_weights_and_fvd_skip(tmp_path, monkeypatch):
  """`--fid_weights` with a random-weight pytorch-fid Inception (written by torch): the FID
  rows equal the Frechet distances of the halves' features computed here, the real features
  are cached (a second run reads them), and FVD on 8-frame clips is skipped with why."""
  torch = pytest.importorskip("torch")
  from gcm_jax.alignment import fidelity, frechet  # pylint: disable=g-import-not-at-top
  from gcm_jax.models.pretrained import inception_fid  # pylint: disable=g-import-not-at-top
  from tests import fid_fvd_references as ref  # pylint: disable=g-import-not-at-top
  from tests import syncnet_references  # pylint: disable=g-import-not-at-top
  config, noise = _stub_model(monkeypatch)
  config.data.data_dir = str(tmp_path / "data")
  torch.manual_seed(0)
  net = syncnet_references.randomize(ref.FIDInception3(), seed=0)
  path = str(tmp_path / "pt_inception.pth")
  torch.save(net.state_dict(), path)
  (tmp_path / "rgb_imagenet.pt").write_bytes(b"")  # Never read: 8-frame clips skip FVD.
  weights = {"fid_weights": path, "fvd_weights": str(tmp_path / "rgb_imagenet.pt")}
  report = evaluate.evaluate("unused", weights, num_clips=4, clip_frames=8)
  assert report["skipped"] == {
      "fvd": "clips of 8 frames; FVD takes 16-frame clips (raise --clip_frames)",
      "lse_project_syncnet, syncnet_fd": report["skipped"]["lse_project_syncnet, syncnet_fd"],
      "lse_syncnet_python": report["skipped"]["lse_syncnet_python"]}
  gt = train_utils.talking_faces_clips("test", 4, 8, 32, "center", config.model.text_max_len, 0,
                                       keys=("video",))["video"]
  module, variables = inception_fid.load_inception_fid(path)
  features = lambda v: frechet.fid_features(module, variables, v.reshape(-1, 32, 32, 3))
  real_a, real_b = features(gt[:2]), features(gt[2:])
  generated_a = features(np.clip(gt + noise, -1, 1)[:2])
  rows = report["published_fd"]
  np.testing.assert_allclose(rows["ground_truth_floor"]["fid"],
                             fidelity.feature_frechet_distance(real_a, real_b), rtol=1e-4)
  np.testing.assert_allclose(rows["generated"]["fid"],
                             fidelity.feature_frechet_distance(generated_a, real_b), rtol=1e-4)
  cache = tmp_path / "data" / "eval_feature_cache"
  assert len(list(cache.iterdir())) == 1
  calls = []
  monkeypatch.setattr(frechet, "FEATURES", dict(frechet.FEATURES, fid=lambda *a: calls.append(
      a[2].shape[0]) or frechet.fid_features(*a)))
  again = evaluate.evaluate("unused", {"fid_weights": path}, num_clips=4, clip_frames=8)
  assert calls == [16]  # Only the generated half: the real frames came from the cache.
  assert again["published_fd"] == rows
