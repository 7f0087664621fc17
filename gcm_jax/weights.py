"""The one import path for published PyTorch weights: state dict -> Flax params.

Every converter in gcm_jax (Whisper, the text encoders, the autoencoder, ...) does the same
two things, both here:

1. `load_state_dict(path)`: read a checkpoint into a flat `{torch_key: np.ndarray}` dict.
   safetensors files (one file, a folder with `model.safetensors`, or a sharded folder with
   `*.safetensors.index.json`) are parsed here with numpy alone (bfloat16 through ml_dtypes),
   so no torch is needed at run time. PyTorch pickles (`.pt`, `.pth`, `.bin`, `.ckpt`) need
   torch and are read with `torch.load(weights_only=True)`; the usual wrappers
   (`{"state_dict": ...}`, openai-whisper's `{"model_state_dict": ..., "dims": ...}`) are
   unwrapped.
2. `import_params(state_dict, name_map, expected)`: build the Flax params tree through an
   explicit name map (a list of `Mapping`: Flax path <- torch key, with a layout transform),
   checked against the params the Flax module expects (`jax.eval_shape(model.init, ...)`).
   Every problem is collected and raised at once in one `WeightImportError` that names each
   missing key, each unexpected key and each mis-shaped tensor.

Layout conventions (torch -> Flax): `nn.Linear.weight` [out, in] -> `Dense.kernel` [in, out]
(`linear`); `nn.ConvNd.weight` [out, in, *k] -> `Conv.kernel` [*k, in, out] (`conv`);
`LayerNorm/GroupNorm.weight` -> `scale` and embeddings unchanged (`identity`).

Models with BatchNorm import their whole variables tree, not only params: `batch_norm` maps
`weight/bias` to `params/<layer>/scale,bias` and `running_mean/running_var` to
`batch_stats/<layer>/mean,var`, `in_collection("params", ...)` prefixes the other mappings,
and `expected_variables` gives the tree to check against (`import_params` takes any tree).
"""
import dataclasses
import json
import os
import re
import struct
from typing import Any, Callable, Iterable, Mapping as MappingType, Sequence

import jax
import ml_dtypes
import numpy as np

StateDict = dict[str, np.ndarray]
Transform = Callable[[np.ndarray], np.ndarray]

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
# `.model`: syncnet_python's `syncnet_v2.model` (a pickled state dict).
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".model")
# Keys under which common training scripts nest the state dict.
_STATE_DICT_WRAPPERS = ("model_state_dict", "state_dict", "model")


class WeightImportError(ValueError):
  """A checkpoint does not fit the model; the message lists every problem found."""


# --- reading checkpoints ---------------------------------------------------------------------

def read_safetensors(path: str) -> StateDict:
  """Reads one `.safetensors` file into numpy arrays (copies, so the file can be closed)."""
  with open(path, "rb") as f:
    raw = f.read()
  if len(raw) < 8:
    raise WeightImportError(f"{path}: not a safetensors file (shorter than its 8-byte header)")
  (header_len,) = struct.unpack("<Q", raw[:8])
  if 8 + header_len > len(raw):
    raise WeightImportError(f"{path}: truncated safetensors file (header of {header_len} bytes "
                            f"in a file of {len(raw)})")
  try:
    header = json.loads(raw[8:8 + header_len])
  except ValueError as e:
    raise WeightImportError(f"{path}: unreadable safetensors header ({e})") from None
  data = memoryview(raw)[8 + header_len:]
  tensors = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise WeightImportError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
    begin, end = info["data_offsets"]
    if end > len(data) or (end - begin) != dtype.itemsize * int(np.prod(info["shape"])):
      raise WeightImportError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
    tensors[name] = np.frombuffer(data[begin:end], dtype).reshape(info["shape"]).copy()
  return tensors


def _read_torch(path: str) -> StateDict:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise WeightImportError(
        f"{path}: reading a PyTorch pickle needs torch (pip install torch), or convert it once "
        "to safetensors elsewhere (safetensors.torch.save_file), which needs no torch here"
    ) from None
  obj = torch.load(path, map_location="cpu", weights_only=True)
  for key in _STATE_DICT_WRAPPERS:
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
      break
  if not isinstance(obj, dict):
    raise WeightImportError(f"{path}: expected a state dict, found {type(obj).__name__}")
  return {k: v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
          for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_state_dict(path: str) -> StateDict:
  """Reads a checkpoint (file or HF-style folder) into `{torch_key: np.ndarray}`."""
  if os.path.isdir(path):
    index = [f for f in os.listdir(path) if f.endswith(".safetensors.index.json")]
    if index:
      with open(os.path.join(path, index[0])) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      state = {}
      for shard in shards:
        state.update(read_safetensors(os.path.join(path, shard)))
      return state
    for name in ("model.safetensors", "diffusion_pytorch_model.safetensors"):
      if os.path.exists(os.path.join(path, name)):
        return read_safetensors(os.path.join(path, name))
    raise WeightImportError(f"{path}: folder has no model.safetensors, "
                            "diffusion_pytorch_model.safetensors or *.safetensors.index.json")
  if not os.path.exists(path):
    raise WeightImportError(f"{path}: no such file")
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  if path.endswith(_TORCH_SUFFIXES):
    return _read_torch(path)
  raise WeightImportError(f"{path}: unknown weight format (expected .safetensors or one of "
                          f"{', '.join(_TORCH_SUFFIXES)})")


# --- layout transforms -----------------------------------------------------------------------

def identity(w: np.ndarray) -> np.ndarray:
  return w


def linear(w: np.ndarray) -> np.ndarray:
  """nn.Linear.weight [out, in] -> Dense.kernel [in, out]."""
  if w.ndim != 2:
    raise ValueError(f"a linear weight must be 2-D, got shape {w.shape}")
  return w.T


def conv(w: np.ndarray) -> np.ndarray:
  """nn.ConvNd.weight [out, in, *kernel] -> Conv.kernel [*kernel, in, out]."""
  if w.ndim < 3:
    raise ValueError(f"a conv weight must be at least 3-D, got shape {w.shape}")
  return np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))


def squeeze_linear(w: np.ndarray) -> np.ndarray:
  """A 1x1 conv weight [out, in, 1, 1] used as a linear layer -> Dense.kernel [in, out]."""
  return linear(w.reshape(w.shape[0], w.shape[1]))


@dataclasses.dataclass(frozen=True)
class Mapping:
  """One Flax param `flax` ("a/b/kernel") taken from state-dict key `torch` via `transform`."""
  flax: str
  torch: str
  transform: Transform = identity


def dense(flax: str, torch: str, bias: bool = True) -> list[Mapping]:
  """nn.Linear -> nn.Dense."""
  out = [Mapping(f"{flax}/kernel", f"{torch}.weight", linear)]
  return out + ([Mapping(f"{flax}/bias", f"{torch}.bias")] if bias else [])


def norm(flax: str, torch: str) -> list[Mapping]:
  """nn.LayerNorm / nn.GroupNorm (weight, bias) -> Flax (scale, bias)."""
  return [Mapping(f"{flax}/scale", f"{torch}.weight"), Mapping(f"{flax}/bias", f"{torch}.bias")]


def convolution(flax: str, torch: str, bias: bool = True) -> list[Mapping]:
  """nn.Conv1d/2d/3d -> nn.Conv."""
  out = [Mapping(f"{flax}/kernel", f"{torch}.weight", conv)]
  return out + ([Mapping(f"{flax}/bias", f"{torch}.bias")] if bias else [])


def embedding(flax: str, torch: str) -> list[Mapping]:
  """nn.Embedding.weight -> nn.Embed.embedding (same layout)."""
  return [Mapping(f"{flax}/embedding", f"{torch}.weight")]


# State-dict keys of BatchNorm that no Flax variable holds (pass to `import_params(ignore=)`).
BATCH_NORM_IGNORE = (r".*\.num_batches_tracked",)


def in_collection(collection: str, mappings: Iterable[Mapping]) -> list[Mapping]:
  """Prefixes each Flax path with a variable collection ("params/conv/kernel")."""
  return [dataclasses.replace(m, flax=f"{collection}/{m.flax}") for m in mappings]


def batch_norm(flax: str, torch: str) -> list[Mapping]:
  """nn.BatchNorm1d/2d/3d -> nn.BatchNorm, as paths in the variables tree.

  weight/bias -> params/<flax>/scale,bias; running_mean/running_var ->
  batch_stats/<flax>/mean,var. Ignore `BATCH_NORM_IGNORE` (num_batches_tracked).
  """
  return (in_collection("params", norm(flax, torch))
          + [Mapping(f"batch_stats/{flax}/mean", f"{torch}.running_mean"),
             Mapping(f"batch_stats/{flax}/var", f"{torch}.running_var")])


# --- building params -------------------------------------------------------------------------

def _flatten(tree: MappingType[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, MappingType):
      flat.update(_flatten(value, path))
    else:
      flat[path] = value
  return flat


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def _bullets(title: str, lines: Sequence[str]) -> list[str]:
  return [f"{title} ({len(lines)}):"] + [f"  {line}" for line in lines] if lines else []


def import_params(state_dict: StateDict, name_map: Iterable[Mapping], expected: Any,
                  ignore: Sequence[str] = (), source: str = "checkpoint") -> dict[str, Any]:
  """Builds a Flax params tree from `state_dict` through `name_map`.

  Args:
    state_dict: `{torch_key: array}`, e.g. from `load_state_dict`.
    name_map: one `Mapping` per Flax param.
    expected: the params tree the module expects (arrays or `jax.ShapeDtypeStruct`s, e.g.
      `jax.eval_shape(model.init, ...)["params"]`); gives the paths, shapes and dtypes. Any
      tree works: `expected_variables` (all collections) with collection-prefixed paths.
    ignore: regular expressions (full match) of state-dict keys the model does not use
      (buffers such as position ids, heads the port leaves out); any other unused key is an
      error.
    source: how to call the checkpoint in error messages (its path).

  Returns:
    The nested params dict, each leaf a numpy array of the expected shape and dtype.

  Raises:
    WeightImportError: listing every state-dict key the map needs but the checkpoint lacks,
      every Flax param no mapping covers, every unused and not ignored key, and every tensor
      whose shape (after its transform) differs from the expected one.
  """
  want = {path: leaf for path, leaf in _flatten(expected).items()}
  missing, mis_shaped, unmapped, params, used = [], [], [], {}, set()
  mapped = set()
  for m in name_map:
    mapped.add(m.flax)
    if m.flax not in want:
      unmapped.append(f"{m.flax} (mapped from {m.torch}; the model has no such param)")
      continue
    if m.torch not in state_dict:
      missing.append(f"{m.torch} (for {m.flax})")
      continue
    used.add(m.torch)
    value = np.asarray(m.transform(np.asarray(state_dict[m.torch])))
    shape = tuple(want[m.flax].shape)
    if value.shape != shape:
      mis_shaped.append(f"{m.torch} -> {m.flax}: checkpoint {tuple(state_dict[m.torch].shape)}"
                        f" gives {value.shape}, model expects {shape}")
      continue
    params[m.flax] = value.astype(want[m.flax].dtype)
  uncovered = sorted(set(want) - mapped)
  patterns = [re.compile(p) for p in ignore]
  unexpected = sorted(k for k in state_dict
                      if k not in used and not any(p.fullmatch(k) for p in patterns))
  # A key whose mapping was rejected for its shape is reported once, as mis-shaped.
  rejected = {line.split(" -> ")[0] for line in mis_shaped}
  unexpected = [k for k in unexpected if k not in rejected]
  problems = (_bullets("missing in the checkpoint", missing)
              + _bullets("unexpected in the checkpoint (not used by the model)", unexpected)
              + _bullets("mis-shaped", mis_shaped)
              + _bullets("model params the name map does not cover", uncovered)
              + _bullets("name map entries for params the model lacks", unmapped))
  if problems:
    raise WeightImportError(f"{source} does not fit the model:\n" + "\n".join(problems))
  return _unflatten(params)


def expected_variables(module: Any, *example_inputs: Any, **kwargs: Any) -> Any:
  """Shapes/dtypes of all `module`'s variables (params, batch_stats, ...), not allocated."""
  return jax.eval_shape(lambda: module.init(jax.random.key(0), *example_inputs, **kwargs))


def expected_params(module: Any, *example_inputs: Any, **kwargs: Any) -> Any:
  """Shapes/dtypes of `module`'s params for `example_inputs`, without allocating them."""
  return expected_variables(module, *example_inputs, **kwargs)["params"]
