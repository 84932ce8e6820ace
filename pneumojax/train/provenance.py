"""Where and how a run was made, for results.json: hardware, versions, code commit, command line, wall time.

A reproduction table has to say what produced each number; these fields let it do so from the results file alone.
"""

import contextlib
import os
import platform
import subprocess
import sys
from importlib import metadata

import jax

import pneumojax

_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow', 'tensorflow-cpu',
             'tensorflow-datasets', 'numpy')


def git_commit() -> dict | None:
  """{'commit', 'dirty'} of the checkout pneumojax runs from, or None outside a git checkout."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(pneumojax.__file__)))
  try:
    def git(*args):
      return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True, timeout=10,
                            check=True).stdout.strip()
    return {'commit': git('rev-parse', 'HEAD'), 'dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}
  except (OSError, subprocess.SubprocessError):
    return None


def hardware() -> dict:
  devices = jax.devices()
  return {'backend': jax.default_backend(), 'device_kind': devices[0].device_kind,
          'device_count': jax.device_count(), 'local_device_count': jax.local_device_count(),
          'process_count': jax.process_count(), 'cpu_count': os.cpu_count(), 'platform': platform.platform(),
          'processor': platform.processor() or platform.machine(), 'hostname': platform.node()}


def versions() -> dict:
  found = {'python': platform.python_version(), 'pneumojax': pneumojax.__version__}
  for name in _PACKAGES:
    try:
      found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return found


_command: str | None = None  # set by `recorded_command` (the sweep runs each run in-process)


@contextlib.contextmanager
def recorded_command(command: str):
  """Records `command` instead of this process's own command line, for runs started in-process."""
  global _command
  previous, _command = _command, command
  try:
    yield
  finally:
    _command = previous


def command_line() -> str:
  """The command as typed, as far as Python knows it (`pneumojax train ...`, or the test runner's)."""
  if _command is not None:
    return _command
  if not sys.argv or not sys.argv[0]:
    return ''
  program = os.path.basename(sys.argv[0])
  if sys.argv[0].endswith(os.path.join('pneumojax', 'cli.py')):  # `python -m pneumojax.cli` is `pneumojax`
    program = 'pneumojax'
  return ' '.join([program, *sys.argv[1:]])


def run_info(wall_time_s: float, start_step: int) -> dict:
  """The `run` entry of results.json. Wall time covers this invocation only: a resumed run's earlier part is not
  in it (`resumed_from_step` > 0 says so)."""
  return {'wall_time_s': round(wall_time_s, 3), 'resumed_from_step': start_step, 'command': command_line(),
          'git': git_commit(), 'hardware': hardware(), 'versions': versions()}
