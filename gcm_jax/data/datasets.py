"""The dataset registry: `config.data.name` -> its `contract.Dataset` entry.

Adding a dataset: a module that builds a `contract.Dataset` (its records, clips, features,
ground truth) and one line here (docs/extending.md).
"""
from gcm_jax.data import contract
from gcm_jax.data.talking_faces import dataset as talking_faces
from gcm_jax.data.video_folder import dataset as video_folder

DATASETS: dict[str, contract.Dataset] = {
    "talking_faces": talking_faces.DATASET,
    "video_folder": video_folder.DATASET,
}


def get(name: str) -> contract.Dataset:
  """The registry entry of `name`; ValueError naming the known ones if there is none."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; expected one of {tuple(DATASETS)}")
  return DATASETS[name]
