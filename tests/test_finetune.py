"""The fine-tuning trainer end to end on real batches: results, resume, checkpoint safety, NaN guard."""

import json
import shutil

import jax
import numpy as np
import pytest

from pneumojax import train
from pneumojax.data import device, pipeline, prepare, splits
from pneumojax.evaluation import metrics
from pneumojax.train import checkpoint, evaluator, files, parallel, run
from pneumojax.trained import load
from tests.helpers import (assert_best_checkpoint_keeps, data_config, final_state, outcome, pretrained_run_config,
                           refuse_to_read_split, tiny_config)


@pytest.fixture(scope='module')
def six_step_run(builder64, tfds_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('six')
  config = tiny_config(tfds_dir, 6)
  return config, workdir, train.train_and_evaluate(config, str(workdir))


def _val_only_config(tfds_dir, device_memory_mb=1024):
  """tiny_config for 3 steps on bacteria vs virus, the test split switched off."""
  config = tiny_config(tfds_dir, 3)
  config.data.update({'task': 'bacteria_vs_virus', 'device_memory_mb': device_memory_mb})
  config.eval.evaluate_test = False
  return config


@pytest.fixture(scope='module')
def val_only_run(builder64, tfds_dir, tmp_path_factory):
  """A run with eval.evaluate_test=False whose every reader of the test split raises: (config, workdir, results)."""
  workdir = tmp_path_factory.mktemp('val_only')
  config = _val_only_config(tfds_dir)
  with pytest.MonkeyPatch.context() as monkeypatch:
    refuse_to_read_split(monkeypatch, config.data.test_split)
    return config, workdir, train.train_and_evaluate(config, str(workdir))


def _assert_val_only(config, workdir, results):
  saved = json.loads((workdir / files.RESULTS).read_text())
  assert not [k for k in saved if k.startswith('test')] and not [k for k in results if k.startswith('test')]
  assert saved['val']['split'] == saved['val_at_val_threshold']['split'] == 'val_pd'
  assert saved['val_at_val_threshold']['chosen_on'] == 'val_pd' and 'OPTIMISTIC' in saved['val_at_val_threshold'][
      'protocol']
  assert "the 'test' split was not read" in saved['protocol'] and saved['config']['eval']['evaluate_test'] is False
  assert not (workdir / files.TEST_HISTORY).exists() and not (workdir / 'eval').exists()


def test_the_guard_catches_every_reader_of_the_test_split(builder64, tfds_dir, monkeypatch):
  config = data_config(tfds_dir)
  refuse_to_read_split(monkeypatch, 'test')
  for read in (lambda: builder64.as_dataset(split='test'), lambda: splits.read_metadata(builder64, 'test'),
               lambda: pipeline.split_info(builder64, 'test', config),
               lambda: pipeline.eval_dataset(builder64, config, 'test', 256),
               lambda: device.read_split(builder64, 'test', config)):
    with pytest.raises(AssertionError, match="the 'test' split was read"):
      read()
  assert pipeline.split_info(builder64, 'val_pd', config).num_examples == 609  # the other splits are read


def test_a_val_only_run_never_reads_the_test_split(val_only_run):
  _assert_val_only(*val_only_run)


def test_a_val_only_run_on_the_tf_data_pipeline_never_reads_the_test_split(builder64, tfds_dir, tmp_path,
                                                                            monkeypatch):
  config = _val_only_config(tfds_dir, device_memory_mb=0)  # every split through tf.data
  refuse_to_read_split(monkeypatch, config.data.test_split)
  _assert_val_only(config, tmp_path, train.train_and_evaluate(config, str(tmp_path)))


def test_the_val_chosen_threshold_maximises_balanced_accuracy_on_validation(val_only_run):
  config, workdir, results = val_only_run
  trained = load.load_run(workdir)
  dp = parallel.DataParallel('jit')
  dataset, _ = pipeline.eval_dataset(prepare.get_builder(config.data), config.data, 'val_pd', 256)
  values = evaluator.outputs(dp, dp.replicate(trained.state), dataset.as_numpy_iterator()).outputs.compute()
  labels, scores = values['label'], values['probs'][:, 1]  # P(virus) of the pneumonia films of val_pd
  best = max(metrics.binary_metrics(labels, scores, t)['balanced_accuracy'] for t in np.unique(scores))
  at_val = results['val_at_val_threshold']
  assert "Youden's J" in at_val['rule'] and at_val['balanced_accuracy'] == pytest.approx(best, abs=1e-9)
  assert metrics.binary_metrics(labels, scores, at_val['threshold'])['balanced_accuracy'] == pytest.approx(best)


def test_a_val_only_run_resumed_with_the_test_switched_on_is_tested_once(val_only_run, tmp_path):
  config, workdir, searched = val_only_run
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  config = config.copy_and_resolve_references()
  config.eval.evaluate_test = True  # eval.evaluate_test may change on resume: no training step reads the test split
  tested = train.train_and_evaluate(config, str(tmp_path))
  assert tested['run']['resumed_from_step'] == 3 and tested['checkpoint_step'] == searched['checkpoint_step']
  # The same validation metrics (as JSON: an undefined metric is NaN, which equals nothing).
  assert json.dumps(tested['val']) == json.dumps(searched['val']) and 'val_at_val_threshold' not in tested
  assert tested['test']['num_examples'] == 242 + 148  # the pneumonia films of the official test split
  assert tested['test_at_val_threshold']['threshold'] == searched['val_at_val_threshold']['threshold']


def test_results_follow_the_protocol(six_step_run):
  config, workdir, results = six_step_run
  saved = json.loads((workdir / files.RESULTS).read_text())
  assert saved['test']['num_examples'] == 624 and saved['test']['split'] == 'test'
  assert saved['val']['split'] == 'val_pd' and saved['val']['num_examples'] == 609
  assert saved['checkpoint_step'] in (3, 6) and "'val_pd'" in saved['protocol']
  with checkpoint.Checkpointer(workdir) as ckpt:
    assert saved['checkpoint_step'] == ckpt.best_step()
  assert 0.0 <= saved['test']['auc'] <= 1.0 and np.sum(saved['test']['confusion_matrix']) == 624
  assert list((workdir).glob('events.out.tfevents.*'))


def test_resume_equals_an_uninterrupted_run(six_step_run, tfds_dir, tmp_path):
  config, workdir, _ = six_step_run
  train.train_and_evaluate(tiny_config(tfds_dir, 3), str(tmp_path))  # "interrupted" after 3 steps
  train.train_and_evaluate(tiny_config(tfds_dir, 6), str(tmp_path))  # started again on the same workdir
  resumed, uninterrupted = final_state(config, tmp_path), final_state(config, workdir)
  assert int(resumed.step) == 6
  for a, b in zip(jax.tree.leaves((resumed.params, resumed.opt_state, resumed.batch_stats)),
                  jax.tree.leaves((uninterrupted.params, uninterrupted.opt_state, uninterrupted.batch_stats))):
    np.testing.assert_array_equal(a, b)


def test_another_model_in_the_workdir_is_refused_and_nothing_is_lost(six_step_run, tfds_dir):
  _, workdir, _ = six_step_run
  before = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  other = tiny_config(tfds_dir, 9)
  other.model.name = 'resnet18'
  with pytest.raises(ValueError, match="holds checkpoints of model 'simple_cnn'.*'resnet18'"):
    train.train_and_evaluate(other, str(workdir))
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == before


def test_resuming_with_another_config_is_refused_and_nothing_is_lost(six_step_run, tfds_dir):
  _, workdir, _ = six_step_run
  before = sorted(p.name for p in workdir.rglob('*'))
  other = tiny_config(tfds_dir, 9)
  other.seed = 1
  other.data.augment = False
  with pytest.raises(ValueError, match=r"another config \(data.augment: saved True, requested False; seed: saved 0, "
                                       r"requested 1\)"):
    train.train_and_evaluate(other, str(workdir))
  assert sorted(p.name for p in workdir.rglob('*')) == before


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(builder64, tfds_dir, tmp_path):
  exploding = tiny_config(tfds_dir, 9)
  # The learning rate jumps to 1e30 after step 3 (its checkpoint) and the loss diverges.
  exploding.optim.update(dict(schedule='step', step_epochs=(1 / 3,), step_factor=1e33))
  with pytest.raises(FloatingPointError, match=r'last good checkpoint \(step 3\)'):
    train.train_and_evaluate(exploding, str(tmp_path))
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 3


def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_completes(trained_run, tmp_path, caplog):
  config, _, undamaged = trained_run
  train.train_and_evaluate(config, str(tmp_path))
  ckpts = tmp_path / 'checkpoints'
  latest = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  data = [f for f in (ckpts / str(latest) / 'state').rglob('*') if f.is_file() and f.parent.name == 'd']
  assert data
  for f in data:  # the array data of the newest step zeroed, as a failing disk leaves it
    f.write_bytes(b'\0' * f.stat().st_size)
  (tmp_path / files.RESULTS).unlink()
  with caplog.at_level('WARNING'):
    rerun = train.train_and_evaluate(config, str(tmp_path))  # the same command again
  assert [p.name.rsplit('-', 2)[0] for p in ckpts.glob('damaged-*')] == [f'damaged-{latest}']
  assert f'Moved the unreadable checkpoint step {latest}' in caplog.text
  # The step was trained again, and the best is chosen among readable steps, as in an undamaged run.
  assert outcome(rerun) == outcome(undamaged)
  assert json.loads((tmp_path / files.RESULTS).read_text())['checkpoint_step'] == undamaged['checkpoint_step']


def test_damaged_and_half_written_checkpoints_are_skipped(builder64, tfds_dir, tmp_path, caplog):
  config = tiny_config(tfds_dir, 6)
  train.train_and_evaluate(config, str(tmp_path))
  ckpts = tmp_path / 'checkpoints'
  shutil.copytree(ckpts / '6', ckpts / '9.orbax-checkpoint-tmp-1234')  # a save killed before its rename
  shutil.copytree(ckpts / '6', ckpts / '8')                            # a step damaged on disk
  for f in (ckpts / '8' / 'state').rglob('*'):
    if f.is_file() and f.stat().st_size > 1000:
      f.write_bytes(b'\0' * 10)
  with caplog.at_level('WARNING'):
    state = checkpoint.Checkpointer(tmp_path).restore_latest(run.initial_state(config, 1, 1)[0])
  assert int(state.step) == 6
  assert 'incomplete checkpoint' in caplog.text and 'step 8' in caplog.text


@pytest.mark.slow  # Prepares the 64 px dataset and trains a ResNet.
def test_frozen_backbone_run_starts_from_init_from_and_keeps_it(builder64, tfds_dir, tmp_path):
  config, pretrained = pretrained_run_config(tfds_dir, tmp_path, num_steps=2, eval_every_steps=2, batch_size=32)
  config.model.freeze_batch_norm = True
  config.optim.backbone_lr_factor = 0.0
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['checkpoint_step'] == 2
  assert_best_checkpoint_keeps(tmp_path / 'run', pretrained)


@pytest.mark.slow
def test_quickstart_reaches_its_targets(quickstart_run):
  """The README's quickstart: about 8 minutes on a 2-core CPU."""
  _, _, results = quickstart_run
  assert results['test']['auc'] >= 0.93 and results['test']['accuracy'] >= 0.85, results['test']
