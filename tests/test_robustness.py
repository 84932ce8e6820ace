"""Preemption, hard kills, damaged checkpoints, multi-process training and untrusted images (issue 8)."""

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from PIL import Image

from pneumojax.data import images
from pneumojax.train import checkpoint, loop, validate
from tests.test_train import tiny_config

REPO = Path(__file__).resolve().parents[1]
NUM_STEPS = 40

# Runs one training in a fresh process: `python -c SCRIPT tfds_dir workdir [process_id num_processes port]`.
SCRIPT = '''
import sys
from tests.test_robustness import robust_config
from pneumojax.train import loop, preemption
tfds_dir, workdir, *process = sys.argv[1:]
try:
  loop.train_and_evaluate(robust_config(tfds_dir, *map(int, process)), workdir)
except preemption.Interrupted as e:
  print(e, flush=True)
  sys.exit(e.exit_code)
'''


def robust_config(tfds_dir, process_id=-1, num_processes=0, port=0):
  config = tiny_config(tfds_dir, NUM_STEPS)
  config.train.eval_every_steps = 10
  if num_processes:
    config.distributed.update(dict(initialize=True, coordinator_address=f'localhost:{port}',
                                   num_processes=num_processes, process_id=process_id))
  return config


def _start(tfds_dir, workdir, *process, devices=1):
  env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
  return subprocess.Popen([sys.executable, '-c', SCRIPT, str(tfds_dir), str(workdir), *map(str, process)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(run, workdir, timeout=240):
  """Returns once a first complete checkpoint exists; the run is then mid-training."""
  deadline = time.time() + timeout
  while not any(p.name.isdigit() for p in (workdir / 'checkpoints').glob('*')):
    assert run.poll() is None, run.stdout.read()
    assert time.time() < deadline, 'no checkpoint appeared'
    time.sleep(0.05)


def _params(tfds_dir, workdir, step=None):
  config = robust_config(tfds_dir)
  with checkpoint.Checkpointer(workdir) as ckpt:
    template, _ = loop.initial_state(config, 1, 1)
    return ckpt.restore(ckpt.latest_step() if step is None else step, template)


def _assert_same_state(a, b):
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state, a.batch_stats)),
                  jax.tree.leaves((b.params, b.opt_state, b.batch_stats))):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def uninterrupted(builder64, tfds_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  run = _start(tfds_dir, workdir)
  assert run.wait() == 0, run.stdout.read()
  return _params(tfds_dir, workdir)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes_to_the_same_parameters(uninterrupted, tfds_dir, tmp_path, signum):
  run = _start(tfds_dir, tmp_path)
  _wait_for_checkpoint(run, tmp_path)
  run.send_signal(signum)
  output = run.communicate()[0]
  if signum == signal.SIGTERM:
    assert run.returncode == 128 + signal.SIGTERM, output
    assert 'Run the same command again to resume' in output
    with checkpoint.Checkpointer(tmp_path) as ckpt:  # saved at the step boundary after the signal
      assert 10 <= ckpt.latest_step() < NUM_STEPS
  else:
    assert run.returncode == -signal.SIGKILL
  resumed = _start(tfds_dir, tmp_path)
  assert resumed.wait() == 0, resumed.stdout.read()
  _assert_same_state(_params(tfds_dir, tmp_path), uninterrupted)


def test_two_processes_train_like_one_with_two_devices(builder64, tfds_dir, tmp_path):
  """Two processes of one device each = one process of two devices (per-device BatchNorm and dropout keys)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  runs = [_start(tfds_dir, tmp_path / 'two', i, 2, port) for i in range(2)]
  runs.append(_start(tfds_dir, tmp_path / 'one', devices=2))
  for run in runs:
    assert run.wait() == 0, run.stdout.read()
  two, one = _params(tfds_dir, tmp_path / 'two'), _params(tfds_dir, tmp_path / 'one')
  # The same computation, but cross-process sums may add in another order: equal to float tolerance.
  for x, y in zip(jax.tree.leaves(two.params), jax.tree.leaves(one.params)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  assert (tmp_path / 'two' / loop.RESULTS).exists()


def test_damaged_and_half_written_checkpoints_are_skipped(builder64, tfds_dir, tmp_path, caplog):
  config = tiny_config(tfds_dir, 6)
  loop.train_and_evaluate(config, str(tmp_path))
  ckpts = tmp_path / 'checkpoints'
  shutil.copytree(ckpts / '6', ckpts / '9.orbax-checkpoint-tmp-1234')  # a save killed before its rename
  shutil.copytree(ckpts / '6', ckpts / '8')                            # a step damaged on disk
  for f in (ckpts / '8' / 'state').rglob('*'):
    if f.is_file() and f.stat().st_size > 1000:
      f.write_bytes(b'\0' * 10)
  with caplog.at_level('WARNING'):
    state = checkpoint.Checkpointer(tmp_path).restore_latest(loop.initial_state(config, 1, 1)[0])
  assert int(state.step) == 6
  assert 'incomplete checkpoint' in caplog.text and 'step 8' in caplog.text


def test_config_is_validated_before_any_work(tfds_dir, tmp_path):
  config = tiny_config(tfds_dir, 6)
  config.optim.schedule = 'cosin'
  with pytest.raises(ValueError, match="optim.schedule='cosin' is not one of: constant, cosine, step"):
    validate.validate(config, str(tmp_path))
  config = tiny_config(tfds_dir, 6)
  config.data.val_split = 'test'
  with pytest.raises(ValueError, match='cannot be the test split'):
    validate.validate(config, str(tmp_path))
  (tmp_path / 'file').write_text('')
  with pytest.raises(ValueError, match='cannot be written'):
    validate.validate(tiny_config(tfds_dir, 6), str(tmp_path / 'file' / 'run'))


def _encoded(fmt, mode, size=(24, 16)):
  buffer = io.BytesIO()
  pixels = np.random.default_rng(0).integers(0, 255, (*size[::-1], len(mode)), dtype=np.uint8)
  Image.fromarray(pixels.squeeze(-1) if mode == 'L' else pixels, mode).save(buffer, format=fmt)
  return buffer.getvalue()


VALID = [_encoded('JPEG', 'L'), _encoded('JPEG', 'RGB'), _encoded('PNG', 'L'), _encoded('PNG', 'RGBA')]


@hypothesis.settings(max_examples=300, deadline=None, database=None)
@hypothesis.given(st.one_of(
    st.binary(max_size=2048),
    st.tuples(st.sampled_from(VALID), st.integers(0, 4000), st.binary(min_size=1, max_size=64)).map(
        lambda t: t[0][:t[1] % len(t[0])] + t[2] + t[0][t[1] % len(t[0]) + len(t[2]):]),  # overwritten bytes
    st.tuples(st.sampled_from(VALID), st.integers(1, 4000)).map(lambda t: t[0][:t[1] % len(t[0])]),  # truncated
))
def test_image_reading_never_crashes(data):
  try:
    pixels, notes = images.decode_grayscale(data, 'fuzz.bin')
  except images.ImageReadError as e:
    assert 'fuzz.bin' in str(e)
  else:
    assert pixels.dtype == np.uint8 and pixels.ndim == 2 and all(isinstance(n, str) for n in notes)
