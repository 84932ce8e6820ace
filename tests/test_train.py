"""The training loop end to end on real batches: results, resume, checkpoint safety, NaN guard, CLI config."""

import json

import jax
import numpy as np
import pytest

from pneumojax import cli, evaluate
from pneumojax.config import default_config
from pneumojax.train import checkpoint, loop, validate
from tests.conftest import CHEST_XRAY


def tiny_config(tfds_dir, num_steps):
  config = default_config()
  config.data.update(dict(data_dir=str(tfds_dir), manual_dir=str(CHEST_XRAY), resolution=64))
  config.model.kwargs = {'widths': (8, 16)}
  config.optim.schedule = 'constant'  # so that a 3-step run continued to 6 equals a 6-step run
  config.train.update(dict(batch_size=32, eval_batch_size=256, num_steps=num_steps, eval_every_steps=3,
                           log_every_steps=2))
  return config


def _final_state(config, workdir):
  with checkpoint.Checkpointer(workdir) as ckpt:
    template, _ = loop.initial_state(config, 1, 1)
    return ckpt.restore(ckpt.latest_step(), template)


@pytest.fixture(scope='module')
def six_step_run(builder64, tfds_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('six')
  config = tiny_config(tfds_dir, 6)
  return config, workdir, loop.train_and_evaluate(config, str(workdir))


def test_results_follow_the_protocol(six_step_run):
  config, workdir, results = six_step_run
  saved = json.loads((workdir / loop.RESULTS).read_text())
  assert saved['test']['num_examples'] == 624 and saved['test']['split'] == 'test'
  assert saved['val']['split'] == 'val_pd' and saved['val']['num_examples'] == 609
  assert saved['checkpoint_step'] in (3, 6) and "'val_pd'" in saved['protocol']
  with checkpoint.Checkpointer(workdir) as ckpt:
    assert saved['checkpoint_step'] == ckpt.best_step()
  assert 0.0 <= saved['test']['auc'] <= 1.0 and np.sum(saved['test']['confusion_matrix']) == 624
  assert list((workdir).glob('events.out.tfevents.*'))


def test_resume_equals_an_uninterrupted_run(six_step_run, tfds_dir, tmp_path):
  config, workdir, _ = six_step_run
  loop.train_and_evaluate(tiny_config(tfds_dir, 3), str(tmp_path))  # "interrupted" after 3 steps
  loop.train_and_evaluate(tiny_config(tfds_dir, 6), str(tmp_path))  # started again on the same workdir
  resumed, uninterrupted = _final_state(config, tmp_path), _final_state(config, workdir)
  assert int(resumed.step) == 6
  for a, b in zip(jax.tree.leaves((resumed.params, resumed.opt_state, resumed.batch_stats)),
                  jax.tree.leaves((uninterrupted.params, uninterrupted.opt_state, uninterrupted.batch_stats))):
    np.testing.assert_array_equal(a, b)


def test_eval_command_reproduces_the_test_metrics(six_step_run):
  _, workdir, results = six_step_run
  evaluated = evaluate.evaluate_checkpoint(str(workdir), 'test', eval_overrides={'bootstrap_samples': 10})
  assert evaluated['checkpoint_step'] == results['checkpoint_step']
  assert evaluated['operating_points']['fixed threshold']['auc'] == pytest.approx(results['test']['auc'], abs=1e-6)
  assert (workdir / 'eval' / 'test' / 'metrics.json').exists()


def test_another_model_in_the_workdir_is_refused_and_nothing_is_lost(six_step_run, tfds_dir):
  _, workdir, _ = six_step_run
  before = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  other = tiny_config(tfds_dir, 9)
  other.model.name = 'resnet18'
  with pytest.raises(ValueError, match="holds checkpoints of model 'simple_cnn'.*'resnet18'"):
    loop.train_and_evaluate(other, str(workdir))
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == before


def test_resuming_with_another_config_is_refused_and_nothing_is_lost(six_step_run, tfds_dir):
  _, workdir, _ = six_step_run
  before = sorted(p.name for p in workdir.rglob('*'))
  other = tiny_config(tfds_dir, 9)
  other.seed = 1
  other.data.augment = False
  with pytest.raises(ValueError, match=r"another config \(data.augment: saved True, requested False; seed: saved 0, "
                                       r"requested 1\)"):
    loop.train_and_evaluate(other, str(workdir))
  assert sorted(p.name for p in workdir.rglob('*')) == before


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(builder64, tfds_dir, tmp_path):
  exploding = tiny_config(tfds_dir, 9)
  # The learning rate jumps to 1e30 after step 3 (its checkpoint) and the loss diverges.
  exploding.optim.update(dict(schedule='step', step_epochs=(1 / 3,), step_factor=1e33))
  with pytest.raises(FloatingPointError, match=r'last good checkpoint \(step 3\)'):
    loop.train_and_evaluate(exploding, str(tmp_path))
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 3


def test_batch_size_must_divide_over_devices(monkeypatch, tfds_dir, tmp_path):
  monkeypatch.setattr(validate.jax, 'device_count', lambda: 3)
  with pytest.raises(ValueError, match='train.batch_size=32 must be a multiple of the 3 devices'):
    validate.validate(tiny_config(tfds_dir, 1), str(tmp_path))


def test_missing_checkpoint_for_eval(tmp_path):
  with pytest.raises(FileNotFoundError, match='holds no checkpoints'):
    evaluate.evaluate_checkpoint(str(tmp_path / 'nothing'))


def test_cli_config_overrides_are_type_checked():
  config = cli.load_config(['--config', 'experiments/quickstart.py', '--config.train.batch_size=16'])
  assert config.train.batch_size == 16 and config.model.name == 'simple_cnn'
  with pytest.raises(SystemExit, match='batchsize'):
    cli.load_config(['--config', 'experiments/quickstart.py', '--config.train.batchsize=16'])
  with pytest.raises(SystemExit, match='invalid literal'):
    cli.load_config(['--config', 'experiments/quickstart.py', '--config.train.batch_size=many'])


def test_cli_reports_an_unreadable_config_file_in_one_line(tmp_path):
  (tmp_path / 'broken.py').write_text('def get_config(:\n  pass\n')
  for path, cause in [(tmp_path / 'missing.py', 'No such file'), (tmp_path / 'broken.py', 'line 1: invalid syntax'),
                      (tmp_path, 'Is a directory')]:
    for overrides in ([], ['--config.seed=1']):
      with pytest.raises(SystemExit) as error:
        cli.load_config(['--config', str(path), *overrides])
      message = str(error.value)
      assert message.startswith('pneumojax: bad --config: ') and '\n' not in message, message
      assert cause in message and str(path) in message, message


@pytest.mark.slow
def test_quickstart_reaches_its_targets(tmp_path):
  """The README's quickstart: about 8 minutes on a 2-core CPU."""
  config = cli.load_config(['--config', 'experiments/quickstart.py'])
  config.data.manual_dir = str(CHEST_XRAY)
  config.data.data_dir = str(tmp_path / 'tfds')
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['test']['auc'] >= 0.93 and results['test']['accuracy'] >= 0.85, results['test']
