"""Shared fixtures: the real data in ../shared (never copied into the repo), prepared once per test session, and a
small trained run. Helpers (paths, configs) are in tests/helpers.py."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest

from tests.helpers import CHEST_XRAY, SWEPT_LEARNING_RATES, SWEPT_SEEDS, data_config, tiny_config


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """One TFDS data dir for the session: the 64 px config of the whole dataset is built once."""
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='session')
def builder64(tfds_dir):
  from pneumojax.data import prepare
  if not CHEST_XRAY.is_dir():
    pytest.fail(f'{CHEST_XRAY} is missing: the tests need the shared data beside the checkout.')
  return prepare.get_builder(data_config(tfds_dir, CHEST_XRAY))


@pytest.fixture(scope='session')
def trained_run(builder64, tfds_dir, tmp_path_factory):
  """A tiny binary CNN trained for 6 steps on the 64 px data, once per session: (config, workdir, results)."""
  from pneumojax import train
  workdir = tmp_path_factory.mktemp('trained_run')
  config = tiny_config(tfds_dir, 6)
  config.eval.bootstrap_samples = 50  # Enough to test the intervals, fast.
  return config, workdir, train.train_and_evaluate(config, str(workdir))


@pytest.fixture(scope='session')
def quickstart_run(tmp_path_factory):
  """The README's quickstart trained on the real data, once per session (slow tests only): (config, workdir,
  results)."""
  from pneumojax import config as config_lib
  from pneumojax import train
  tmp_path = tmp_path_factory.mktemp('quickstart')
  config = config_lib.load_config(['--config', 'experiments/quickstart.py'])
  config.data.manual_dir = str(CHEST_XRAY)
  config.data.data_dir = str(tmp_path / 'tfds')
  return config, tmp_path / 'run', train.train_and_evaluate(config, str(tmp_path / 'run'))


@pytest.fixture(scope='session')
def swept(builder64, tfds_dir, tmp_path_factory):
  """A 2 learning rates x 2 seeds sweep of 4-step runs, one of them interrupted at step 2 beforehand:
  (sweep, its output folder, its runs, the interrupted run, the statuses)."""
  from pneumojax import train
  from pneumojax.studies import sweep
  from pneumojax.train import files
  from tests.helpers import write_sweep
  tmp_path = tmp_path_factory.mktemp('sweep')
  definition = write_sweep(tmp_path, tfds_dir, {'optim.learning_rate': SWEPT_LEARNING_RATES}, SWEPT_SEEDS)
  out = tmp_path / 'out'
  runs = sweep.expand(definition)
  interrupted = runs[-1]
  config = sweep.run_config(definition, interrupted, [])
  config.train.num_steps = 2  # "killed" after its step-2 checkpoint: results.json removed below
  train.train_and_evaluate(config, str(out / interrupted.name))
  (out / interrupted.name / files.RESULTS).unlink()
  statuses = sweep.run_sweep(definition, out)
  return definition, out, runs, interrupted, statuses
