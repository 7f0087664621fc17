"""Identity metrics of `evaluate` (docs/alignment.md, "Evaluation"): masked PSNR / SSIM
against float64 numpy references, the re-voiced (dubbing) rows, preservation outside the
dubbing mask, identity vs the reference frames, CSIM with ArcFace, and runs without person
conditions left as they were."""
import json
import types

import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import pytest

from gcm_jax import evaluate
from gcm_jax import image_quality
from gcm_jax import latents
from gcm_jax.alignment import identity
from gcm_jax.data.talking_faces import captions
from gcm_jax.data.talking_faces import ground_truth
from gcm_jax.models import diffusion_model
from gcm_jax.models.pretrained import arcface
from gcm_jax.train import trainer
from tests import test_evaluate as evaluate_tests
from tests import train_utils


# --- masked PSNR / SSIM ----------------------------------------------------------------------

def _psnr64(x, y, mask, data_range=2.0):
  """float64 masked PSNR of one image pair `[H, W, C]` with mask `[H, W]`."""
  x, y, m = np.float64(x), np.float64(y), np.asarray(mask, bool)
  mse = np.mean(np.square(x - y)[m])
  return 10 * np.log10(data_range ** 2 / max(mse, 1e-10))


def _ssim64(x, y, mask, data_range=2.0):
  """float64 SSIM (Wang et al. 2004) written out window by window: 11x11 Gaussian weights
  (sigma 1.5, sum 1), population moments, mean over the windows lying wholly in `mask` and
  over channels."""
  x, y = np.float64(x), np.float64(y)
  k, sigma = 11, 1.5
  g = np.exp(-0.5 * ((np.arange(k) - 5) / sigma) ** 2)
  w = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  h, wd, c = x.shape
  values = []
  for i in range(h - k + 1):
    for j in range(wd - k + 1):
      if not np.all(mask[i:i + k, j:j + k]):
        continue
      for ch in range(c):
        a, b = x[i:i + k, j:j + k, ch], y[i:i + k, j:j + k, ch]
        mu_a, mu_b = np.sum(w * a), np.sum(w * b)
        var_a, var_b = np.sum(w * (a - mu_a) ** 2), np.sum(w * (b - mu_b) ** 2)
        cov = np.sum(w * (a - mu_a) * (b - mu_b))
        values.append((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                      / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
  return np.mean(values) if values else np.nan


def test_masked_psnr_and_ssim_match_float64_references():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 3, 20, 18, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
  mask = rng.uniform(size=(2, 3, 20, 18)) < 0.7
  mask[:, :, :13, :13] = True  # At least one whole window in the region.
  psnr = np.asarray(image_quality.psnr(jnp.asarray(x), jnp.asarray(y), mask=mask))
  ssim = np.asarray(image_quality.ssim(jnp.asarray(x), jnp.asarray(y), mask=mask))
  assert psnr.shape == ssim.shape == (2, 3)
  for i in range(2):
    for t in range(3):
      np.testing.assert_allclose(psnr[i, t], _psnr64(x[i, t], y[i, t], mask[i, t]), atol=1e-4)
      np.testing.assert_allclose(ssim[i, t], _ssim64(x[i, t], y[i, t], mask[i, t]), atol=1e-5)
  # An all-ones mask is the unmasked metric; a broadcast mask [H, W] is one per image.
  full = np.ones((20, 18), bool)
  np.testing.assert_allclose(image_quality.psnr(x, y, mask=full), image_quality.psnr(x, y),
                             rtol=1e-6)
  np.testing.assert_allclose(image_quality.ssim(x, y, mask=full), image_quality.ssim(x, y),
                             atol=1e-6)
  np.testing.assert_allclose(ssim[0, 0], _ssim64(x[0, 0], y[0, 0], full & mask[0, 0]),
                             atol=1e-5)


def test_a_mask_leaving_out_where_images_differ_reads_them_equal():
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (2, 24, 24, 3)).astype(np.float32)
  y = x.copy()
  y[:, 12:] = rng.uniform(-1, 1, y[:, 12:].shape)  # They differ in the lower rows only.
  upper = np.zeros((24, 24), bool)
  upper[:12] = True
  identical = image_quality.psnr(x, x)
  np.testing.assert_array_equal(image_quality.psnr(x, y, mask=upper), identical)  # MSE 0.
  np.testing.assert_array_equal(image_quality.ssim(x, y, mask=upper), np.ones(2, np.float32))
  # Left in, the difference shows; a region without a whole 11x11 window is NaN.
  assert np.all(np.asarray(image_quality.psnr(x, y)) < 20)
  assert np.all(np.asarray(image_quality.ssim(x, y, mask=~upper)) < 0.5)
  thin = np.zeros((24, 24), bool)
  thin[:10] = True
  assert np.all(np.isnan(image_quality.ssim(x, y, mask=thin)))
  assert np.all(np.isnan(image_quality.psnr(x, y, mask=np.zeros((24, 24), bool))))
  with pytest.raises(ValueError, match=r"mask must be \[\.\.\., 24, 24\]"):
    image_quality.psnr(x, y, mask=np.ones((24, 23), bool))


# --- a dubbing run with reference frames, evaluated ------------------------------------------

NUM_CLIPS, CLIP_FRAMES = 4, 12


def _arcface_checkpoint(path) -> str:
  """A small random IResNet (1 block per stage, narrow) saved as arcface_torch saves
  backbone.pth (`torch.save(state_dict)`), with BatchNorm statistics that keep it O(1)."""
  torch = pytest.importorskip("torch")
  from tests import arcface_references as ref  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = ref.iresnet((1, 1, 1, 1), widths=(8, 8, 16, 16), num_features=32)
  images = torch.rand((4, 3, 112, 112), generator=torch.Generator().manual_seed(1)) * 2 - 1
  torch.save(ref.randomize(net, images, seed=0).state_dict(), str(path))
  return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A micro run with one reference frame and the masked source, trained 2 steps, evaluated
  with ArcFace and a random project SyncNet; every `generate_for_clips` call recorded."""
  tmp = tmp_path_factory.mktemp("identity_eval")
  config = train_utils.micro_config()
  config.model.update(reference_frames=1, masked_source=True)
  config.diffusion.update(masked_loss_weight=3.0, p_drop_reference=0.5)
  config.train.num_steps = 2
  config.sampling.update(num_steps=3, reference_scale=1.5)
  workdir = str(tmp / "run")
  trainer.train(config, workdir)
  arcface_path = _arcface_checkpoint(tmp / "backbone.pth")
  (tmp / "syncnet").mkdir()
  weights = {"arcface_weights": arcface_path,
             "syncnet_workdir": evaluate_tests._syncnet_workdir(tmp / "syncnet")}
  calls, generate = [], evaluate.generate_for_clips

  def recording(trained, clips, key, *args, **kwargs):
    videos = generate(trained, clips, key, *args, **kwargs)
    calls.append((clips, videos))
    return videos

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(evaluate, "generate_for_clips", recording)
    report = evaluate.evaluate(workdir, weights, num_clips=NUM_CLIPS, clip_frames=CLIP_FRAMES,
                               noise_levels=(0.5,), output_dir=str(tmp / "out"))
  clips = evaluate.test_clips(config, NUM_CLIPS, CLIP_FRAMES, 0, evaluate.eval_keys(config))
  own, revoiced, no_caption = calls[:3]  # Then the paraphrased captions' (shorter clips).
  return types.SimpleNamespace(
      config=config, report=report, clips=clips, own=own, revoiced=revoiced, no_caption=no_caption,
      arcface_path=arcface_path, md=(tmp / "out" / "eval.md").read_text(encoding="utf-8"),
      out=tmp / "out")


def test_the_dubbing_frames_show_source_masked_input_revoiced_and_the_audios_clip(run):
  """eval_dubbing_frames.png: per clip five rows of 6 frames (2x, 1-px border): the source,
  the source with the dubbing mask grey, the re-voiced frames, those inside the mask only,
  the audio's own clip."""
  image = iio.imread(run.out / evaluate.DUBBING_FRAMES)
  r = run.clips["video"].shape[2]
  tile = 2 * r + 2
  assert image.shape == (NUM_CLIPS * 5 * tile, 6 * tile, 3)
  frame = lambda row, clip=1: image[(5 * clip + row) * tile + 1:(5 * clip + row + 1) * tile - 1,
                                    1:tile - 1][::2, ::2]        # Its first frame, 1x.
  to_uint8 = lambda x: np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)
  source, mask = run.clips["video"][1, 0], run.clips["source_mask"][1, 0]
  np.testing.assert_array_equal(frame(0), to_uint8(source))
  np.testing.assert_array_equal(frame(1)[~mask], to_uint8(source)[~mask])
  assert mask.any() and np.all(frame(1)[mask] == 128)
  revoiced = to_uint8(run.revoiced[1][1, 0])
  np.testing.assert_array_equal(frame(2), revoiced)
  np.testing.assert_array_equal(frame(3)[mask], revoiced[mask])
  np.testing.assert_array_equal(frame(3)[~mask], to_uint8(source)[~mask])
  np.testing.assert_array_equal(frame(4), to_uint8(run.clips["video"][0, 0]))  # shuffled[1] = 0


def test_eval_frames_lead_with_the_reference_frame(run):
  """eval_frames.png of a reference run: per clip a generated and a real row, each led by
  the clip's first reference frame, then 6 frames."""
  image = iio.imread(run.out / "eval_frames.png")
  tile = 2 * run.clips["video"].shape[2] + 2
  assert image.shape == (NUM_CLIPS * 2 * tile, 7 * tile, 3)
  to_uint8 = lambda x: np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)
  for row in (2, 3):  # Clip 1's generated and real rows.
    np.testing.assert_array_equal(image[row * tile + 1:(row + 1) * tile - 1:2, 1:tile - 1:2],
                                  to_uint8(run.clips["reference"][1, 0]))
  np.testing.assert_array_equal(image[3 * tile + 1:4 * tile - 1:2, tile + 1:2 * tile - 1:2],
                                to_uint8(run.clips["video"][1, 0]))


def test_the_dubbing_test_re_voices_each_clip_with_another_clips_audio(run):
  report, clips = run.report, run.clips
  shuffled = np.roll(np.arange(NUM_CLIPS), 1)
  assert report["dubbing"]["audio_from_clip"] == shuffled.tolist()
  # The generator got clip i's frames, caption and reference with clip shuffled[i]'s audio,
  # the own-audio videos the clip's own.
  got, _ = run.revoiced
  np.testing.assert_array_equal(got["mel"], clips["mel"][shuffled])
  np.testing.assert_array_equal(got["audio"], clips["audio"][shuffled])
  for key in ("video", "source_mask", "reference", "text_tokens", "mouth_open"):
    np.testing.assert_array_equal(got[key], clips[key])
  np.testing.assert_array_equal(run.own[0]["mel"], clips["mel"])
  # ... which the model's conditions carry: the new mel, the clip's own frames as the source.
  cond = evaluate.clip_cond(run.config, got)
  np.testing.assert_array_equal(cond["mel"], clips["mel"][shuffled])
  np.testing.assert_array_equal(cond["source"], clips["video"])
  np.testing.assert_array_equal(cond["source_mask"][..., 0], clips["source_mask"])
  # Mouth correlation of the re-voiced videos, read independently.
  videos, mouth = run.revoiced[1], clips["mouth_open"]
  dubbing = report["dubbing"]
  np.testing.assert_allclose(dubbing["revoiced_new_audio"]["mouth_corr"], np.mean(
      ground_truth.mouth_correlation(videos, mouth[shuffled])), atol=1e-6)
  np.testing.assert_allclose(dubbing["revoiced_original_audio"]["mouth_corr"], np.mean(
      ground_truth.mouth_correlation(videos, mouth)), atol=1e-6)
  for row in ("revoiced_new_audio", "revoiced_original_audio"):
    assert sorted(dubbing[row]) == ["lse_c", "lse_d", "mouth_corr"]
    assert all(np.isfinite(v) for v in dubbing[row].values())
  # The ground-truth rows the table reads: a real clip follows its own audio, not another's.
  assert report["ground_truth_matched"]["mouth_corr"] > 0.8
  assert report["ground_truth_shuffled"]["mouth_corr"] < 0.4
  assert "generated_matched" in report and "generated_shuffled" in report  # Kept.


def test_preservation_outside_the_dubbing_mask(run):
  preservation = run.report["identity"]["preservation"]
  assert run.report["identity"]["region"] == "outside the dubbing mask (source_mask)"
  assert preservation["ceiling_note"] == "pixel run: no reconstruction ceiling"
  assert "autoencoder_ceiling" not in preservation
  clips = run.clips
  region = ~clips["source_mask"]
  for row, (_, videos) in (("own_audio", run.own), ("revoiced", run.revoiced)):
    want = np.mean([_psnr64(v, g, m) for v, g, m in zip(
        videos.reshape(-1, 32, 32, 3), clips["video"].reshape(-1, 32, 32, 3),
        region.reshape(-1, 32, 32))])
    assert np.isfinite(preservation[row]["psnr"])
    np.testing.assert_allclose(preservation[row]["psnr"], want, atol=1e-3)
    assert 0 < preservation[row]["ssim"] < 1
    # The frames that kept the source's eyes and head outline, read independently.
    kept = ground_truth.structure_kept(videos, clips["video"], clips)
    assert preservation[row]["eyes_kept"] == pytest.approx(np.mean(kept["eyes"]))
    assert preservation[row]["outline_kept"] == pytest.approx(np.mean(kept["outline"]))
    assert preservation[row]["frames_kept"] == pytest.approx(
        np.mean(kept["eyes"] & kept["outline"]))
  # The source vs itself keeps everything (next to CSIM 1 from the ArcFace rows).
  assert {k: preservation["ground_truth"][k] for k in ("eyes_kept", "outline_kept",
                                                       "frames_kept")} == dict.fromkeys(
      ("eyes_kept", "outline_kept", "frames_kept"), 1.0)
  assert "psnr" not in preservation["ground_truth"]


def test_identity_vs_the_reference_and_the_caption_dropped(run):
  report, clips = run.report, run.clips
  no_caption_clips = run.no_caption[0]
  assert not no_caption_clips["text_mask"].any() and clips["text_mask"].any()
  np.testing.assert_array_equal(no_caption_clips["text_tokens"], clips["text_tokens"])
  accuracy = report["color_accuracy"]
  assert accuracy["chance"] == {"face": 1 / captions.NUM_COLORS,
                                "background": 1 / captions.NUM_COLORS}
  assert accuracy["generated_no_caption"] == ground_truth.color_accuracy(run.no_caption[1], clips)
  assert accuracy["ground_truth"] == {"face": 1.0, "background": 1.0}
  rows = report["identity"]["vs_reference"]
  region = ~clips["source_mask"]
  assert sorted(rows) == ["generated", "generated_no_caption", "generated_other_person",
                          "ground_truth", "ground_truth_other_person"]
  # The floor: each talking-faces clip is its own person; the next clip's reference.
  floor = np.mean([_psnr64(f, clips["reference"][(i + 1) % NUM_CLIPS, 0], region[i, t])
                   for i in range(NUM_CLIPS) for t, f in enumerate(clips["video"][i])])
  np.testing.assert_allclose(rows["ground_truth_other_person"]["psnr"], floor, atol=1e-3)
  assert rows["ground_truth_other_person"]["psnr"] < rows["ground_truth"]["psnr"]
  # The ceiling: the real frames' upper face vs the reference frame, in float64.
  want = np.mean([_psnr64(f, clips["reference"][i, 0], region[i, t])
                  for i in range(NUM_CLIPS) for t, f in enumerate(clips["video"][i])])
  np.testing.assert_allclose(rows["ground_truth"]["psnr"], want, atol=1e-3)
  want_ssim = np.mean([_ssim64(clips["video"][i, t], clips["reference"][i, 0], region[i, t])
                       for i in (0,) for t in (0, 5)])
  one_clip = identity.reference_quality(clips["video"][:1, [0, 5]], clips["reference"][:1],
                                        region[:1, [0, 5]])
  np.testing.assert_allclose(one_clip["ssim"], want_ssim, atol=1e-5)
  for row in rows.values():
    assert np.isfinite(row["psnr"]) and -1 < row["ssim"] <= 1


def test_other_person_is_the_next_clip_of_someone_else():
  np.testing.assert_array_equal(identity.other_person(["a", "a", "b", "c", "a"]),
                                [2, 2, 3, 4, 2])
  assert identity.other_person(["a", "a"]) is None


def test_csim_rows_match_the_port_embedding_the_frames(run):
  report, clips = run.report, run.clips
  identity = report["identity"]
  assert "csim" not in report["skipped"]
  assert identity["csim_network"].startswith("ArcFace iresnet(1, 1, 1, 1) (backbone.pth)")
  module, variables = arcface.load_arcface(run.arcface_path)
  embed = lambda frames: np.asarray(arcface.embed(module, variables, arcface.prepare_faces(
      jnp.asarray(frames.reshape(-1, 32, 32, 3)))))
  real, reference = embed(clips["video"]), embed(clips["reference"])   # [N T, D], [N K, D]
  # Every frame of clip i vs its one reference frame.
  pairs = np.repeat(reference, CLIP_FRAMES, axis=0)
  np.testing.assert_allclose(identity["vs_reference"]["ground_truth"]["csim"],
                             np.mean(np.asarray(arcface.csim(real, pairs))), atol=1e-5)
  generated = embed(run.own[1])
  np.testing.assert_allclose(identity["vs_reference"]["generated"]["csim"],
                             np.mean(np.asarray(arcface.csim(generated, pairs))), atol=1e-5)
  np.testing.assert_allclose(identity["preservation"]["own_audio"]["csim"],
                             np.mean(np.asarray(arcface.csim(generated, real))), atol=1e-5)
  np.testing.assert_allclose(identity["preservation"]["ground_truth"]["csim"], 1.0, atol=1e-5)
  revoiced = embed(run.revoiced[1])
  np.testing.assert_allclose(identity["preservation"]["revoiced"]["csim"],
                             np.mean(np.asarray(arcface.csim(revoiced, real))), atol=1e-5)
  # Not a constant map: the real frames are closer to their own reference than to others'.
  others = np.repeat(np.roll(reference, 1, axis=0), CLIP_FRAMES, axis=0)
  assert np.mean(np.asarray(arcface.csim(real, others))) < identity["vs_reference"][
      "ground_truth"]["csim"]


def test_eval_md_has_the_identity_tables(run):
  md, report = run.md, run.report
  for title in ("## Dubbing: each clip's masked frames re-voiced", "## Preservation: outside "
                "the dubbing mask", "## Identity vs the reference frames"):
    assert title in md
  dub = report["dubbing"]["revoiced_new_audio"]
  assert (f"| re-voiced, vs the new audio | {dub['lse_d']:.4g} | {dub['lse_c']:.4g} | "
          f"{dub['mouth_corr']:.4g} |") in md
  own = report["identity"]["preservation"]["own_audio"]
  assert (f"| generated, own audio | {own['psnr']:.4g} | {own['ssim']:.4g} | "
          f"{own['csim']:.4g} | {own['eyes_kept']:.4g} | {own['outline_kept']:.4g} | "
          f"{own['frames_kept']:.4g} |") in md
  assert "Ceiling: pixel run: no reconstruction ceiling." in md
  assert ("| ground truth: the source itself (CSIM 1 by construction) | - | - | "
          f"{report['identity']['preservation']['ground_truth']['csim']:.4g} | 1 | 1 | 1 |") in md
  assert ("| | PSNR (dB) | SSIM | CSIM | eyes kept | outline kept | both kept |") in md
  assert "the acceptance criterion is both kept in >= 90% of frames" in md
  assert md.index("| ground truth: the real clip (ceiling) |") < md.index(
      "| generated, caption dropped (the person from the reference only) |")
  assert md.index("| ground truth, its own audio (what in sync reads) |") < md.index(
      "| re-voiced, vs the new audio |")
  assert "| chance | 0.1" in md and "| generated, caption dropped (attributes from" in md
  assert "autoencoder reconstruction" not in md  # A pixel run: no such row.
  json.dumps(report)


# --- runs without person conditions, latent runs -----------------------------------------------

def test_a_run_without_identity_gets_no_identity_rows(tmp_path, monkeypatch):
  """The model stubbed (generation = test clips + noise): no identity keys, no new tables;
  CSIM is skipped with why, with or without weights."""
  config = train_utils.micro_config()
  assert not {"reference", "source_mask"} & set(evaluate.eval_keys(config))
  monkeypatch.setattr(diffusion_model, "load_trained",
                      lambda workdir: diffusion_model.TrainedModel(config, None, None))
  calls = []
  monkeypatch.setattr(evaluate, "generate_for_clips",
                      lambda trained, clips, key: calls.append(1) or clips["video"])
  monkeypatch.setattr(evaluate, "condition_usage", lambda *args: [])
  monkeypatch.setattr(evaluate, "paraphrased_caption_match", lambda *args: {})
  report = evaluate.evaluate("unused", {}, num_clips=4, clip_frames=8,
                             output_dir=str(tmp_path))
  assert len(calls) == 1  # Neither re-voiced nor caption-dropped videos.
  assert "identity" not in report and "dubbing" not in report
  assert sorted(report["color_accuracy"]) == ["generated", "ground_truth"]
  assert "csim" not in report["skipped"]  # CSIM means nothing here: not listed either.
  md = (tmp_path / "eval.md").read_text(encoding="utf-8")
  for title in ("Dubbing", "Preservation", "Identity vs the reference", "caption dropped",
                "| chance |"):
    assert title not in md
  again = evaluate.evaluate("unused", {"arcface_weights": "never_read.pth"}, num_clips=4,
                            clip_frames=8)
  assert again == report  # The file is never read.


def test_a_latent_dubbing_run_has_the_autoencoder_ceiling():
  """Preservation of a latent run: the autoencoder's own reconstruction of the source,
  outside the mask, is the ceiling row (computed here with the autoencoder directly)."""
  config = train_utils.micro_config()
  config.model.masked_source = True
  config.latent.update(source="random", config="tiny", seed=0)
  clips = train_utils.talking_faces_clips("test", 2, 4, 32, "center", 96, 0,
                                          keys=("video", "source_mask", "keypoints"))
  rng = np.random.default_rng(0)
  videos = np.clip(clips["video"] + rng.normal(0, 0.1, clips["video"].shape), -1, 1)
  report = evaluate.identity_metrics(evaluate.EvalData(config, clips, videos, np.array([1, 0])))
  preservation = report["identity"]["preservation"]
  assert preservation["ceiling_note"].startswith("latent run: the autoencoder's reconstruction")
  autoencoder = latents.load(config)
  recon = np.clip(np.asarray(autoencoder.decode(autoencoder.encode(jnp.asarray(
      clips["video"])))), -1, 1)
  region = ~clips["source_mask"]
  want = np.mean([_psnr64(a, b, m) for a, b, m in zip(
      recon.reshape(-1, 32, 32, 3), clips["video"].reshape(-1, 32, 32, 3),
      region.reshape(-1, 32, 32))])
  np.testing.assert_allclose(preservation["autoencoder_ceiling"]["psnr"], want, atol=1e-2)
  np.testing.assert_allclose(preservation["own_audio"]["psnr"], np.mean(
      [_psnr64(a, b, m) for a, b, m in zip(videos.reshape(-1, 32, 32, 3),
                                           clips["video"].reshape(-1, 32, 32, 3),
                                           region.reshape(-1, 32, 32))]), atol=1e-3)
  # The frames kept: the source vs itself all, as the hook reads the noisy videos.
  assert preservation["ground_truth"]["frames_kept"] == 1.0
  kept = ground_truth.structure_kept(videos, clips["video"], clips)
  assert preservation["own_audio"]["frames_kept"] == np.mean(kept["eyes"] & kept["outline"])
  # Without a dubbing mask the region is the upper half (contract.lower_half's complement).
  region, where = identity.identity_region(config, {"video": clips["video"]})
  assert where == "the upper half of the frame (outside contract.lower_half)"
  assert region[:, :, :16].all() and not region[:, :, 16:].any()
