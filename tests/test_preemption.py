"""Preemption: SIGTERM stops a run at a step boundary with a checkpoint, SIGKILL loses only the steps since the last
one, and the resumed run ends where an uninterrupted one does."""

import os
import signal
import time

import jax
import numpy as np
import pytest

from pneumojax import train
from pneumojax.train import checkpoint, parallel, preemption
from tests.helpers import NUM_STEPS, outcome, robust_state, start_training


def _wait_for_checkpoint(run, workdir, timeout=240):
  """Returns once a first complete checkpoint exists; the run is then mid-training."""
  deadline = time.time() + timeout
  while not any(p.name.isdigit() for p in (workdir / 'checkpoints').glob('*')):
    assert run.poll() is None, run.stdout.read()
    assert time.time() < deadline, 'no checkpoint appeared'
    time.sleep(0.05)


def _assert_same_state(a, b):
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state, a.batch_stats)),
                  jax.tree.leaves((b.params, b.opt_state, b.batch_stats))):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def uninterrupted(builder64, tfds_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  run = start_training(tfds_dir, workdir)
  assert run.wait() == 0, run.stdout.read()
  return robust_state(tfds_dir, workdir)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes_to_the_same_parameters(uninterrupted, tfds_dir, tmp_path, signum):
  run = start_training(tfds_dir, tmp_path)
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
  resumed = start_training(tfds_dir, tmp_path)
  assert resumed.wait() == 0, resumed.stdout.read()
  _assert_same_state(robust_state(tfds_dir, tmp_path), uninterrupted)


def test_a_signal_at_an_eval_step_keeps_its_validation(trained_run, tmp_path, monkeypatch):
  """SIGTERM arriving during the step whose validation chooses the model: the resumed run chooses it too."""
  config, _, uninterrupted = trained_run
  best = uninterrupted['checkpoint_step']
  def signalled_at_best(method):
    def train(self, state, *args):
      state, step_metrics = method(self, state, *args)
      if int(state.step) == best:
        os.kill(os.getpid(), signal.SIGTERM)
      return state, step_metrics
    return train

  with monkeypatch.context() as patch:
    for name in ('train_step', 'train_steps'):  # the tf.data path's step, the data on the devices' steps
      patch.setattr(parallel.DataParallel, name, signalled_at_best(getattr(parallel.DataParallel, name)))
    with pytest.raises(preemption.Interrupted, match=f'at step {best};'):
      train.train_and_evaluate(config, str(tmp_path))
  resumed = train.train_and_evaluate(config, str(tmp_path))
  assert outcome(resumed) == outcome(uninterrupted)
