"""Shared fixtures: the real data in ../shared (never copied into the repo), prepared once per test session."""

import os
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest

from pneumojax.config import default_config

SHARED = Path(__file__).resolve().parents[2] / 'shared'
CHEST_XRAY = SHARED / 'data' / 'chest_xray'
FULLRES = SHARED / 'data' / 'chest_xray_fullres_sample'


def data_config(data_dir, manual_dir=None, resolution=64, **overrides):
  config = default_config().data
  config.update(dict(data_dir=str(data_dir), manual_dir=manual_dir and str(manual_dir), resolution=resolution,
                     **overrides))
  return config


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """One TFDS data dir for the session: the 64 px config of the whole dataset is built once."""
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='session')
def builder64(tfds_dir):
  from pneumojax.data import paths
  if not CHEST_XRAY.is_dir():
    pytest.fail(f'{CHEST_XRAY} is missing: the tests need the shared data beside the checkout.')
  return paths.get_builder(data_config(tfds_dir, CHEST_XRAY))


@pytest.fixture(scope='session')
def trained_run(builder64, tfds_dir, tmp_path_factory):
  """A tiny binary CNN trained for 6 steps on the 64 px data, once per session: (config, workdir, results)."""
  from pneumojax.train import loop
  from tests.test_train import tiny_config
  workdir = tmp_path_factory.mktemp('trained_run')
  config = tiny_config(tfds_dir, 6)
  config.eval.bootstrap_samples = 50  # Enough to test the intervals, fast.
  return config, workdir, loop.train_and_evaluate(config, str(workdir))
