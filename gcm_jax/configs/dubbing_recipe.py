"""CPU dubbing recipe: re-voices held-out talking faces (README "Dub a video").

The pixel CPU recipe (`cpu_recipe.py`: 32x32 faces, 8-frame clips, a 3-block width-64
STDiT predicting x0, the SyncNet lip-sync loss) given the person as a dubbing model takes
them: the clip's own frames with the lower face masked and the mask as input channels
(`model.masked_source`), and two reference frames of the person from other times of their
video (`model.reference_frames`, docs/models.md "Identity"). The loss inside the mask is
weighted 5x (`diffusion.masked_loss_weight`), the reference dropped in 10% of the steps
for guidance. Evaluation re-voices each held-out clip with another clip's audio.

  python -m gcm_jax.train.train_syncnet --workdir=/tmp/syncnet
  python run_train.py --config=configs/dubbing_recipe.py --workdir=/tmp/dubbing
  python -m gcm_jax.evaluate --workdir=/tmp/dubbing --syncnet_workdir=/tmp/syncnet_eval
"""
import ml_collections

from gcm_jax.configs import cpu_recipe


def get_config() -> ml_collections.ConfigDict:
  config = cpu_recipe.get_config()
  config.model.update(reference_frames=2, masked_source=True)
  config.diffusion.update(masked_loss_weight=5.0, p_drop_reference=0.1, keep_source=True)
  config.train.update(num_steps=2500)
  return config
