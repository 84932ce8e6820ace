"""Stop at a step boundary on SIGTERM/SIGINT, so the loop can save a checkpoint and exit cleanly.

One process: our own signal handlers set a flag (a second Ctrl-C interrupts at once). Several processes: JAX's
preemption sync manager (started by `jax.distributed.initialize`) catches SIGTERM and agrees with every process
on the step at which all of them stop, so they save the same checkpoint.
"""

import signal

import jax
from jax.experimental import multihost_utils


class Interrupted(Exception):
  """Training stopped on a signal after saving a checkpoint; running the same command again resumes."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum  # the shell's convention for a process ended by a signal


class StopOnSignal:
  """`should_stop(step)` turns True after SIGTERM or SIGINT; a context manager restoring the old handlers."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    signals = [signal.SIGINT] if jax.process_count() > 1 else [signal.SIGTERM, signal.SIGINT]
    for signum in signals:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def _handle(self, signum, frame):
    self.signum = signum
    signal.signal(signum, self._previous[signum])  # a second signal acts as it would without us

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(step):
      self.signum = self.signum or signal.SIGTERM
    return self.signum is not None
