"""Several JAX processes, and a CPU host split into several devices (train/distributed.py)."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from pneumojax.config import default_config
from pneumojax.train import distributed, files
from tests.helpers import REPO, robust_state, start_training, tiny_config


def test_two_processes_train_like_one_with_two_devices(builder64, tfds_dir, tmp_path):
  """Two processes of one device each = one process of two devices (BatchNorm and dropout of the global batch)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  runs = [start_training(tfds_dir, tmp_path / 'two', i, 2, port) for i in range(2)]
  runs.append(start_training(tfds_dir, tmp_path / 'one', devices=2))
  for run in runs:
    assert run.wait() == 0, run.stdout.read()
  two, one = robust_state(tfds_dir, tmp_path / 'two'), robust_state(tfds_dir, tmp_path / 'one')
  # The same computation, but cross-process sums (gradients, and BatchNorm's statistics in every layer) add in another
  # order: after 40 Adam steps equal to float tolerance (seen: 7e-6 at most).
  for x, y in zip(jax.tree.leaves(two.params), jax.tree.leaves(one.params)):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=2e-5)
  assert (tmp_path / 'two' / files.RESULTS).exists()


def test_auto_cpu_devices_are_two_per_core_and_divide_the_batches():
  assert distributed.auto_cpu_devices((64, 256), cpu_count=2) == 4
  assert distributed.auto_cpu_devices((64, 256), cpu_count=64) == distributed.MAX_AUTO_CPU_DEVICES
  assert distributed.auto_cpu_devices((6, 256), cpu_count=2) == 2
  assert distributed.auto_cpu_devices((7, 256), cpu_count=2) == 1
  config = default_config()
  assert distributed.default_cpu_devices(config) == distributed.auto_cpu_devices((64, 256))
  config.train.cached_features = True  # a linear probe: one device
  assert distributed.default_cpu_devices(config) == 1


def test_cpu_devices_split_the_host_and_refuse_a_late_change(builder64, tfds_dir, tmp_path):
  # In this process JAX has started: the same count is accepted, another is a clear error, and the automatic
  # choice (0) keeps the running count.
  config = tiny_config(tfds_dir, 2)
  config.distributed.cpu_devices = jax.device_count()
  distributed.initialize(config)
  config.distributed.cpu_devices = 0
  distributed.initialize(config)
  config.distributed.cpu_devices = jax.device_count() + 1
  with pytest.raises(ValueError, match='already runs with'):
    distributed.initialize(config)
  # A new process trains on 2 CPU devices (the global batch of 32 split in two).
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  command = [sys.executable, '-m', 'pneumojax.cli', 'train', '--config', 'experiments/quickstart.py',
             '--workdir', str(tmp_path), f'--config.data.data_dir={tfds_dir}', '--config.train.num_steps=2',
             '--config.train.batch_size=32', '--config.distributed.cpu_devices=2']
  done = subprocess.run(command, cwd=REPO, env={**env, 'PYTHONPATH': str(REPO)}, check=True, capture_output=True,
                        text=True)
  assert 'INFO Training' in done.stderr  # the CLI's progress log reaches the terminal
  results = json.loads((tmp_path / files.RESULTS).read_text())
  assert results['run']['hardware']['device_count'] == 2 and results['config']['distributed']['cpu_devices'] == 2
