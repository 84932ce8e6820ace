"""`load_run`: a trained run's config, model and checkpoint, as eval, report, predict and explain read it."""

import json
import shutil

import jax
import numpy as np
import pytest

from pneumojax.train import checkpoint, files, run
from pneumojax.trained import load


def test_a_workdir_without_checkpoints_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='holds no checkpoints'):
    load.load_run(tmp_path / 'nothing')


def test_the_best_checkpoint_is_restored_into_the_abstract_state(trained_run):
  config, workdir, results = trained_run
  loaded = load.load_run(workdir)
  assert loaded.step == results['checkpoint_step'] and loaded.model.num_classes == 2
  with checkpoint.Checkpointer(workdir) as ckpt:  # the same checkpoint restored into a concrete state
    expected = ckpt.restore(loaded.step, run.initial_state(config, 1, 1)[0])
  jax.tree.map(np.testing.assert_array_equal, loaded.variables,
               {'params': expected.params, 'batch_stats': expected.batch_stats})
  assert loaded.threshold() == json.loads((workdir / files.THRESHOLD).read_text())


def test_a_run_saved_with_a_retired_config_field_loads_and_resumes(trained_run, tmp_path):
  config, workdir, _ = trained_run
  copy = shutil.copytree(workdir, tmp_path / 'run')
  loaded = load.load_run(copy)
  older = config.copy_and_resolve_references()
  older.model.num_classes = 2  # as configs had it before data.task set the number of classes
  with checkpoint.Checkpointer(copy) as ckpt:
    ckpt.save(99, loaded.state, older, metrics={'auc': 1.0})
  assert 'num_classes' not in load.load_run(copy, 99).config.model
  with checkpoint.Checkpointer(copy) as ckpt:
    ckpt.check_config(config)  # resuming it with today's config: the same run
