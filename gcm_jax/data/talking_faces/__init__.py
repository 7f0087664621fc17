"""Procedurally generated talking faces with real (espeak-ng) speech.

`generate_example` renders one clip directly; `talking_faces.TalkingFaces` is the TFDS
builder and `build` writes the dataset (array_record) into a data_dir. See docs/data.md.
"""
from gcm_jax.data.talking_faces.captions import Attributes
from gcm_jax.data.talking_faces.captions import make_caption
from gcm_jax.data.talking_faces.captions import parse_caption
from gcm_jax.data.talking_faces.example import Example
from gcm_jax.data.talking_faces.example import generate_example
from gcm_jax.data.talking_faces.talking_faces import build
from gcm_jax.data.talking_faces.talking_faces import get_builder
from gcm_jax.data.talking_faces.talking_faces import TalkingFaces
from gcm_jax.data.talking_faces.talking_faces import TalkingFacesConfig
