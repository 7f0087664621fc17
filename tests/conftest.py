"""Test setup: 8 simulated CPU devices so mesh/sharding code runs without accelerators.

`--xla_force_host_platform_device_count=8` is added to XLA_FLAGS (keeping any other flags
already there) before JAX starts; a different device count in XLA_FLAGS is an error, and
the session refuses to start unless JAX then sees exactly 8 devices, so the mesh tests
never run on (or skip for) a different device count.
"""
import os
import re

import pytest

NUM_DEVICES = 8
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def xla_flags_with_device_count(flags: str, count: int = NUM_DEVICES) -> str:
  """`flags` with the host device-count flag set to `count`.

  Raises:
    ValueError: `flags` already asks for a different device count.
  """
  found = re.findall(_DEVICE_COUNT_FLAG + r"=(\S*)", flags)
  if not found:
    return f"{flags} {_DEVICE_COUNT_FLAG}={count}".strip()
  if any(value != str(count) for value in found):
    raise ValueError(f"XLA_FLAGS={flags!r} sets {_DEVICE_COUNT_FLAG} to {found}, but the tests "
                     f"need {count} devices: remove the flag or set it to {count}")
  return flags


try:
  os.environ["XLA_FLAGS"] = xla_flags_with_device_count(os.environ.get("XLA_FLAGS", ""))
except ValueError as e:
  raise pytest.UsageError(str(e)) from None
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _share_compilations(config) -> None:
  """One persistent XLA compilation cache for the session: both xdist workers and the
  `run_train.py` subprocesses the tests start read and write `.pytest_cache/d/jax_compilation`
  (kept between runs of one checkout, at most 2 GiB), so the many runs of the same micro
  config compile each program once. The cache keys on the HLO, the compile options and the
  jax / XLA versions; a size limit makes JAX lock the folder (filelock), so concurrent
  processes never read a half-written entry."""
  if not hasattr(config, "cache"):  # pytest -p no:cacheprovider
    return
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(config.cache.mkdir("jax_compilation")))
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_configure(config):
  _share_compilations(config)
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  if len(devices) != NUM_DEVICES:
    raise pytest.UsageError(
        f"the tests need {NUM_DEVICES} devices, JAX sees {len(devices)} ({devices[0].platform}); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}, "
        f"JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS')!r} (was jax imported before "
        f"tests/conftest.py set them?)")
