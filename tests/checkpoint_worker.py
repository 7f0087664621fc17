"""Subprocess for the crash test: saves step 1, starts an async save of step 2, dies.

Usage: python -m tests.checkpoint_worker <directory>
"""
import os
import signal
import sys

import jax.numpy as jnp

from gcm_jax.runs import checkpoint as checkpoint_lib
from gcm_jax.runs import state as state_lib


def _state(value: float) -> state_lib.TrainState:
  params = {"w": jnp.full((4096, 4096), value)}  # 64 MiB per copy: the save takes a while.
  return state_lib.TrainState(step=jnp.int32(value), params=params, ema_params=params,
                              opt_state={"mu": params})


def main(directory: str) -> None:
  checkpointer = checkpoint_lib.Checkpointer(
      directory, dict(every_steps=1, keep=3, async_save=True))
  checkpointer.maybe_save(1, _state(1.0), {"iterator": "one"})
  checkpointer.wait()
  checkpointer.maybe_save(2, _state(2.0), {"iterator": "two"})
  print("saving step 2", flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
  main(sys.argv[1])
