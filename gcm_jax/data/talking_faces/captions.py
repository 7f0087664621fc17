"""Text <-> visual attributes: face color, background color and head motion.

Caption template (one sentence, parsed back exactly by `parse_caption`):
  "a green face on a purple background, moving left, says: Papa bought a map."
`motion` 'still' is written "staying still".
"""
import dataclasses
import re

import numpy as np

# Name -> RGB uint8. Index in this tuple is the int label used by the dataset.
COLORS = (
    ("red", (220, 40, 40)),
    ("orange", (245, 140, 30)),
    ("yellow", (240, 220, 50)),
    ("green", (50, 170, 60)),
    ("cyan", (60, 210, 220)),
    ("blue", (40, 70, 200)),
    ("purple", (130, 50, 170)),
    ("pink", (245, 150, 190)),
    ("white", (240, 240, 240)),
    ("brown", (120, 75, 40)),
)
COLOR_NAMES = tuple(name for name, _ in COLORS)
COLOR_RGB = np.array([rgb for _, rgb in COLORS], np.uint8)  # [NUM_COLORS, 3]
NUM_COLORS = len(COLORS)
MOTIONS = ("still", "left", "right", "up", "down")
NUM_MOTIONS = len(MOTIONS)
# Unit head displacement per motion, in image coordinates (x right, y down).
MOTION_DIRECTIONS = {"still": (0.0, 0.0), "left": (-1.0, 0.0), "right": (1.0, 0.0),
                     "up": (0.0, -1.0), "down": (0.0, 1.0)}

_CAPTION_RE = re.compile(
    r"^a (?P<face>\w+) face on a (?P<bg>\w+) background, "
    r"(?:moving (?P<motion>left|right|up|down)|staying still), says: (?P<script>.+)$", re.S)


@dataclasses.dataclass(frozen=True)
class Attributes:
  """Visual attributes asked for by a caption (names from COLOR_NAMES / MOTIONS)."""
  face_color: str
  background_color: str
  motion: str

  def __post_init__(self):
    for field, value in (("face_color", self.face_color),
                         ("background_color", self.background_color)):
      if value not in COLOR_NAMES:
        raise ValueError(f"{field} must be one of {COLOR_NAMES}, got {value!r}")
    if self.face_color == self.background_color:
      raise ValueError(f"face and background colors must differ, both are {self.face_color!r}")
    if self.motion not in MOTIONS:
      raise ValueError(f"motion must be one of {MOTIONS}, got {self.motion!r}")

  @property
  def face_color_id(self) -> int:
    return COLOR_NAMES.index(self.face_color)

  @property
  def background_color_id(self) -> int:
    return COLOR_NAMES.index(self.background_color)

  @property
  def motion_id(self) -> int:
    return MOTIONS.index(self.motion)


def sample_attributes(rng: np.random.Generator) -> Attributes:
  """Uniform face color, a different background color and a motion."""
  face, bg = rng.choice(NUM_COLORS, size=2, replace=False)
  return Attributes(COLOR_NAMES[face], COLOR_NAMES[bg], MOTIONS[rng.integers(NUM_MOTIONS)])


def make_caption(attributes: Attributes, script: str) -> str:
  """'a {face} face on a {bg} background, moving {motion}, says: {script}'."""
  if not script.strip():
    raise ValueError("script is empty: the caption needs something to say")
  motion = ("staying still" if attributes.motion == "still"
            else f"moving {attributes.motion}")
  return (f"a {attributes.face_color} face on a {attributes.background_color} background, "
          f"{motion}, says: {script.strip()}")


# Held-out phrasings (evaluation only; training captions all follow `make_caption`): does a
# text encoder carry a caption's meaning, or only its training template's wording?
COLOR_SYNONYMS = {"red": "crimson", "orange": "tangerine", "yellow": "golden", "green": "emerald",
                  "cyan": "turquoise", "blue": "cobalt", "purple": "violet", "pink": "rose",
                  "white": "snow-white", "brown": "chocolate"}


def _with_article(word: str) -> str:
  return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _motion_clause(motion: str) -> str:
  return "it stays still" if motion == "still" else f"it moves {motion}"


PARAPHRASES = {
    "template": lambda a, s: make_caption(a, s),
    "reordered": lambda a, s: (f"on a {a.background_color} background, a {a.face_color} face, "
                               f"{_motion_clause(a.motion)} and says: {s}"),
    "predicative": lambda a, s: (f"the face is {a.face_color} and the background is "
                                 f"{a.background_color}; {_motion_clause(a.motion)}; it says: {s}"),
    "synonyms": lambda a, s: (
        f"{_with_article(COLOR_SYNONYMS[a.face_color])} face on "
        f"{_with_article(COLOR_SYNONYMS[a.background_color])} background, "
        + make_caption(a, s).split(" background, ", 1)[1]),
}


def paraphrase(caption: str, style: str) -> str:
  """`caption` (a `make_caption` caption) phrased in one of the PARAPHRASES styles."""
  if style not in PARAPHRASES:
    raise ValueError(f"unknown paraphrase style {style!r}; expected one of {tuple(PARAPHRASES)}")
  attributes, script = parse_caption(caption)
  return PARAPHRASES[style](attributes, script)


def parse_caption(caption: str) -> tuple[Attributes, str]:
  """Inverse of `make_caption`: returns (attributes, script).

  Raises:
    ValueError: if the caption does not follow the template or names unknown colors.
  """
  match = _CAPTION_RE.match(caption.strip())
  if match is None:
    raise ValueError(
        f"caption {caption!r} does not follow 'a <color> face on a <color> background, "
        f"moving <left|right|up|down> (or staying still), says: <script>'")
  attributes = Attributes(match["face"], match["bg"], match["motion"] or "still")
  return attributes, match["script"]
