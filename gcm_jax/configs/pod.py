"""Pod config: multi-host mesh with FSDP and tensor parallelism, 128x128 video.

The mesh shape must multiply to the global device count (e.g. 64 = 8 x 4 x 2 here
with data=-1 filling the rest). Launch one process per host with the same command
(scripts/launch_tpu_vm.sh, scripts/launch_slurm.sh): `jax.distributed` starts from the
cluster environment (Cloud TPU VMs, SLURM srun, Open MPI, Kubernetes); on other GPU
clusters pass --config.distributed.coordinator_address=HOST0:PORT
--config.distributed.num_processes=N --config.distributed.process_id=I (docs/training.md).
"""
import ml_collections

from gcm_jax.configs import talking_faces


def get_config() -> ml_collections.ConfigDict:
  config = talking_faces.get_config()
  config.model.update(width=1024, depth=24, num_heads=16, text_layers=6, audio_layers=4,
                      patch_size=4, remat_policy="full")
  config.data.update(resolution=128, num_frames=32, num_train=100_000, worker_count=16)
  config.data.batch_size = 512
  config.train.update(learning_rate=1e-4, warmup_steps=5_000)
  config.mesh.shape = dict(data=-1, fsdp=4, tensor=2)
  config.distributed.auto_detect = True
  return config
