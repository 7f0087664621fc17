"""The test setup's device-count flag handling (tests/conftest.py)."""
import jax
import pytest

from tests import conftest


def test_device_count_flag_is_added_kept_or_refused():
  flag = "--xla_force_host_platform_device_count"
  assert conftest.xla_flags_with_device_count("") == f"{flag}=8"
  assert (conftest.xla_flags_with_device_count("--xla_cpu_enable_fast_math=false")
          == f"--xla_cpu_enable_fast_math=false {flag}=8")
  assert conftest.xla_flags_with_device_count(f"--a=1 {flag}=8") == f"--a=1 {flag}=8"
  with pytest.raises(ValueError, match=r"sets --xla_force_host_platform_device_count to \['4'\]"):
    conftest.xla_flags_with_device_count(f"{flag}=4")


def test_session_sees_eight_devices():
  assert len(jax.devices()) == conftest.NUM_DEVICES == 8
