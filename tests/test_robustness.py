"""Preemption, hard kills, damaged checkpoints and result files, multi-process training, bad configs and
untrusted images."""

import io
import json
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

from pneumojax import threshold
from pneumojax.data import images
from pneumojax.train import checkpoint, loop, parallel, preemption, test_selected, validate
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


def _outcome(results) -> str:
  """The chosen checkpoint and its metrics, as comparable text (an undefined metric is NaN, which equals nothing)."""
  return json.dumps({k: results.get(k) for k in ('checkpoint_step', 'val', 'test', 'test_at_val_threshold')},
                    sort_keys=True, default=str)


def test_a_signal_at_an_eval_step_keeps_its_validation(trained_run, tmp_path, monkeypatch):
  """SIGTERM arriving during the step whose validation chooses the model: the resumed run chooses it too."""
  config, _, uninterrupted = trained_run
  best = uninterrupted['checkpoint_step']
  train_step = parallel.DataParallel.train_step

  def signalled_at_best(self, state, batch):
    state, step_metrics = train_step(self, state, batch)
    if int(state.step) == best:
      os.kill(os.getpid(), signal.SIGTERM)
    return state, step_metrics

  with monkeypatch.context() as patch:
    patch.setattr(parallel.DataParallel, 'train_step', signalled_at_best)
    with pytest.raises(preemption.Interrupted, match=f'at step {best};'):
      loop.train_and_evaluate(config, str(tmp_path))
  resumed = loop.train_and_evaluate(config, str(tmp_path))
  assert _outcome(resumed) == _outcome(uninterrupted)


def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_completes(trained_run, tmp_path, caplog):
  config, _, undamaged = trained_run
  loop.train_and_evaluate(config, str(tmp_path))
  ckpts = tmp_path / 'checkpoints'
  latest = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  data = [f for f in (ckpts / str(latest) / 'state').rglob('*') if f.is_file() and f.parent.name == 'd']
  assert data
  for f in data:  # the array data of the newest step zeroed, as a failing disk leaves it
    f.write_bytes(b'\0' * f.stat().st_size)
  (tmp_path / loop.RESULTS).unlink()
  with caplog.at_level('WARNING'):
    rerun = loop.train_and_evaluate(config, str(tmp_path))  # the same command again
  assert [p.name.rsplit('-', 2)[0] for p in ckpts.glob('damaged-*')] == [f'damaged-{latest}']
  assert f'Moved the unreadable checkpoint step {latest}' in caplog.text
  # The step was trained again, and the best is chosen among readable steps, as in an undamaged run.
  assert _outcome(rerun) == _outcome(undamaged)
  assert json.loads((tmp_path / loop.RESULTS).read_text())['checkpoint_step'] == undamaged['checkpoint_step']


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


@pytest.mark.parametrize('field, value, message', [
    ('data.image_size', -4, 'data.image_size=-4 must be positive, or 0 for the stored resolution'),
    ('train.eval_every_steps', -1, 'train.eval_every_steps=-1 must be positive, or 0 for every epoch'),
])
def test_negative_sizes_are_refused(tfds_dir, tmp_path, field, value, message):
  config = tiny_config(tfds_dir, 6)
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=message):
    validate.validate(config, str(tmp_path))


# Writes a result file in a fresh process killed by the kernel once the file passes 64 bytes: a kill mid-write.
KILLED_WRITE = """
import resource, signal, sys
from tests.test_robustness import WRITERS
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores SIGXFSZ; by default it ends the process.
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
WRITERS[sys.argv[1]](sys.argv[2], 0.25)
"""
WRITERS = {  # result file: a function writing it with a value
    threshold.FILE: lambda workdir, value: threshold.save(
        workdir, {'threshold': value, 'rule': 'x' * 200, 'chosen_on': 'val_pd', 'checkpoint_step': 3}),
    test_selected.HISTORY: lambda workdir, value: test_selected.record(workdir, [], 3, {'auc': value, 'x': 'x' * 200}),
}
READERS = {  # result file: a function reading that value back
    threshold.FILE: lambda workdir: threshold.load(workdir, 3)['threshold'],
    test_selected.HISTORY: lambda workdir: test_selected.load(workdir)[0]['metrics']['auc'],
}


@pytest.mark.parametrize('name', list(WRITERS))
def test_a_result_file_killed_mid_write_keeps_its_previous_content(tmp_path, name):
  WRITERS[name](tmp_path, 0.75)
  env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'}
  run = subprocess.run([sys.executable, '-c', KILLED_WRITE, name, str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True)
  assert run.returncode == -signal.SIGXFSZ, run.stderr
  assert READERS[name](tmp_path) == 0.75
  WRITERS[name](tmp_path, 0.5)  # a later run: the killed write's leftover confuses nothing
  assert READERS[name](tmp_path) == 0.5
  assert [p.name for p in tmp_path.iterdir()] == [name]


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
