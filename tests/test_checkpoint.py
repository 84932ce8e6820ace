"""Checkpointer: retention, exact resume, refusing another run's checkpoints, interrupted saves, damaged steps."""

import json
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pneumojax import config as config_lib
from pneumojax.train import checkpoint
from pneumojax.train.state import create_train_state

INPUT_SHAPE = (4, 4, 1)


class TinyNet(nn.Module):
  width: int = 4
  depth: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    for _ in range(self.depth):
      x = nn.Dense(self.width)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dense(2)(x)


def make_state(seed=0, **model_kwargs):
  return create_train_state(TinyNet(**model_kwargs), optax.adam(1e-2), jax.random.PRNGKey(seed), INPUT_SHAPE)


@jax.jit
def _update(state, scale):
  grads = jax.tree.map(lambda p: jnp.full_like(p, scale), state.params)
  return state.apply_gradients(grads=grads).replace(
      batch_stats=jax.tree.map(lambda s: s + scale, state.batch_stats))


def trained_state(num_steps=3):
  """A state whose step, params, Adam moments and BatchNorm statistics all moved away from their init."""
  state = make_state()
  for i in range(num_steps):
    state = _update(state, 0.1 * (i + 1))
  return state


def make_config(model_name='tiny'):
  config = config_lib.default_config()
  config.model.name = model_name
  return config


def saved_arrays(state):
  return {'step': state.step, 'params': state.params, 'batch_stats': state.batch_stats,
          'opt_state': state.opt_state, 'rng': state.rng}


def assert_identical(actual, expected):
  """Same step and bit-identical arrays (the step's type follows the restore target: int or array)."""
  assert int(actual.step) == int(expected.step)
  actual, expected = saved_arrays(actual.replace(step=0)), saved_arrays(expected.replace(step=0))
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert np.asarray(a).dtype == np.asarray(e).dtype
    np.testing.assert_array_equal(a, e)


def files_of(directory):
  return sorted((str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in directory.rglob('*'))


def test_keeps_the_latest_n_and_the_best_auc(tmp_path):
  state = trained_state()
  aucs = {1: 0.6, 2: 0.9, 3: 0.7, 4: None, 5: 0.8, 6: 0.5}
  with checkpoint.Checkpointer(tmp_path, keep=2) as ckpt:
    for step, auc in aucs.items():
      metrics = None if auc is None else {'auc': auc, 'confusion_matrix': [[1, 2], [3, 4]]}
      assert ckpt.save(step, state.replace(step=step), make_config(), metrics=metrics)
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [2, 5, 6]

  # A restarted run reads the metrics back from disk.
  with checkpoint.Checkpointer(tmp_path, keep=2) as ckpt:
    assert (ckpt.latest_step(), ckpt.best_step()) == (6, 2)
    step, state = ckpt.restore_best(make_state())
    assert step == int(state.step) == 2


def test_nan_auc_never_counts_as_best(tmp_path):
  with checkpoint.Checkpointer(tmp_path, keep=1) as ckpt:
    for step, auc in [(1, 0.7), (2, float('nan')), (3, float('nan'))]:
      ckpt.save(step, make_state(), make_config(), metrics={'auc': auc})
    assert ckpt.best_step() == 1
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [1, 3]


def test_restore_latest_is_bit_identical(tmp_path):
  state = trained_state()
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(int(state.step), state, make_config(), metrics={'auc': 0.5})

  with checkpoint.Checkpointer(tmp_path) as ckpt:
    fresh = make_state(seed=1)  # Different values everywhere, same structure.
    restored = ckpt.restore_latest(fresh)
    assert_identical(restored, state)
    assert restored.apply_fn is fresh.apply_fn and restored.tx is fresh.tx
    # An abstract target (no memory allocated for the init) restores the same arrays.
    assert_identical(ckpt.restore_latest(jax.eval_shape(make_state)), state)
    assert ckpt.saved_config() == json.loads(make_config().to_json())


def test_relative_workdir_is_relative_to_the_current_directory(tmp_path, monkeypatch):
  # `--workdir runs/x` as typed on the command line; Orbax itself refuses relative paths.
  monkeypatch.chdir(tmp_path)
  state = trained_state()
  with checkpoint.Checkpointer('runs/x') as ckpt:
    ckpt.save(int(state.step), state, make_config(), metrics={'auc': 0.5})
  assert (tmp_path / 'runs/x/checkpoints' / str(int(state.step))).is_dir()
  with checkpoint.Checkpointer('runs/x') as ckpt:
    assert_identical(ckpt.restore_latest(make_state(seed=1)), state)


def test_fresh_workdir_restores_nothing_and_creates_nothing(tmp_path):
  with checkpoint.Checkpointer(tmp_path / 'run') as ckpt:
    assert ckpt.restore_latest(make_state()) is None
    ckpt.check_config(make_config())  # Nothing to compare against: a fresh run may start.
  assert not (tmp_path / 'run').exists()


def test_missing_checkpoint_raises_file_not_found(tmp_path):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(FileNotFoundError, match=f'{re.escape(str(tmp_path))}.*train'):
      ckpt.restore_best(make_state())
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
      ckpt.saved_config()
    with pytest.raises(FileNotFoundError, match='step 7'):
      ckpt.restore(7, make_state())


@pytest.mark.parametrize('other_model', [dict(width=8), dict(depth=2)], ids=['other_shapes', 'other_tree'])
def test_another_models_checkpoint_is_refused_and_kept(tmp_path, other_model):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, trained_state(), make_config('tiny'), metrics={'auc': 0.5})
  before = files_of(tmp_path)

  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path))}.*'tiny'.*'bigger'.*new --workdir"):
      ckpt.check_config(make_config('bigger'))
    with pytest.raises(ValueError,
                       match=rf"{re.escape(str(tmp_path))}.*'tiny'.*arrays differ.*new --workdir"):
      ckpt.restore_latest(make_state(**other_model))
    # The same model still resumes.
    ckpt.check_config(make_config('tiny'))
    assert_identical(ckpt.restore_latest(make_state()), trained_state())
  assert files_of(tmp_path) == before


def test_interrupted_save_is_ignored(tmp_path):
  """A save killed before orbax's final rename leaves `<step>.orbax-checkpoint-tmp-*`, which is never used."""
  state = trained_state()
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    for step in (1, 2):
      ckpt.save(step, state.replace(step=step), make_config(), metrics={'auc': 0.5})
  directory = tmp_path / 'checkpoints'
  partial = directory / '3.orbax-checkpoint-tmp-1700000000'
  shutil.copytree(directory / '2', partial)
  shutil.rmtree(partial / 'state' / 'd')  # Half of the arrays never made it.

  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 2
    assert_identical(ckpt.restore_latest(make_state()), state.replace(step=2))
    # The resumed run saves step 3 again, next to the leftover.
    assert ckpt.save(3, state.replace(step=3), make_config(), metrics={'auc': 0.5})
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert_identical(ckpt.restore_latest(make_state()), state.replace(step=3))


def _damage(step_dir):
  """Zeroes the array data of a saved step, as a failing disk would."""
  data = [f for f in (step_dir / 'state').rglob('*') if f.is_file() and f.parent.name == 'd']
  assert data
  for f in data:
    f.write_bytes(b'\0' * f.stat().st_size)


def test_unreadable_steps_are_moved_aside_and_never_chosen(tmp_path, caplog):
  state = trained_state()
  with checkpoint.Checkpointer(tmp_path, keep=4) as ckpt:
    for step, auc in [(1, 0.6), (2, 0.9), (3, 0.7), (4, 0.5)]:
      ckpt.save(step, state.replace(step=step), make_config(), metrics={'auc': auc})
  directory = tmp_path / 'checkpoints'
  _damage(directory / '2')  # the best
  _damage(directory / '4')  # the latest

  with checkpoint.Checkpointer(tmp_path, keep=4) as ckpt, caplog.at_level('WARNING'):
    assert_identical(ckpt.restore_latest(make_state()), state.replace(step=3))
    assert ckpt.latest_step() == 3
    step, best = ckpt.restore_best(make_state())
    assert step == ckpt.best_step() == 3
    assert_identical(best, state.replace(step=3))
    assert ckpt.save(4, state.replace(step=4), make_config(), metrics={'auc': 0.8})  # the resumed run saves it again
  aside = sorted(p.name for p in directory.iterdir() if not p.name.isdigit())
  assert [name.rsplit('-', 2)[0] for name in aside] == ['damaged-2', 'damaged-4'], aside
  assert 'Moved the unreadable checkpoint step 4' in caplog.text and 'damaged-4-' in caplog.text
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert (ckpt.latest_step(), ckpt.best_step()) == (4, 4)


def test_nothing_is_moved_if_no_step_can_be_read(tmp_path):
  """Every step unreadable may be the reader's fault (e.g. a library version): the files stay where they are."""
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, trained_state().replace(step=1), make_config(), metrics={'auc': 0.5})
  _damage(tmp_path / 'checkpoints' / '1')
  before = files_of(tmp_path)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(FileNotFoundError, match='None of the checkpoints'):
      ckpt.restore_latest(make_state())
  assert files_of(tmp_path) == before


def test_resuming_with_another_config_is_refused_and_kept(tmp_path, caplog):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, trained_state(), make_config(), metrics={'auc': 0.5})
  before = files_of(tmp_path)
  other = make_config()
  other.seed = 1
  other.optim.learning_rate = 0.1
  other.train.batch_size = 16
  other.data.val_seed = 2
  other.train.eval_every_steps = 5
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpoint.MismatchError) as error:
      ckpt.check_config(other)
  message = str(error.value)
  for expected in ('seed: saved 0, requested 1', 'optim.learning_rate: saved 0.001, requested 0.1',
                   'train.batch_size: saved 64, requested 16', 'data.val_seed: saved 0, requested 2',
                   'train.eval_every_steps: saved 0, requested 5', str(tmp_path), 'new --workdir'):
    assert expected in message, message
  assert files_of(tmp_path) == before

  # Where the data is, how long to train, how to log, lay out or report: a resume may change these.
  resumable = make_config()
  resumable.data.data_dir = '/elsewhere'
  resumable.train.num_steps = 1000
  resumable.train.log_every_steps = 7
  resumable.train.parallel = 'pmap'
  resumable.distributed.num_processes = 2
  resumable.eval.bootstrap_samples = 10
  with checkpoint.Checkpointer(tmp_path) as ckpt, caplog.at_level('INFO'):
    ckpt.check_config(resumable)
  assert "train.num_steps=1000 (the checkpoints were saved with -1)" in caplog.text


def test_a_field_added_since_the_run_counts_as_its_default(tmp_path):
  older = make_config()
  del older.eval['report_test_selected']  # a run saved before the field existed
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, trained_state(), older, metrics={'auc': 0.5})
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.check_config(make_config())  # today's default: the same run
    changed = make_config()
    changed.eval.report_test_selected = True
    with pytest.raises(checkpoint.MismatchError, match='eval.report_test_selected: saved False, requested True'):
      ckpt.check_config(changed)
