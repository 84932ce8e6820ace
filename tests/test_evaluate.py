"""`pneumojax eval`: the checkpoint's metrics with patient-bootstrap intervals, the validation-chosen threshold,
metrics.json and the plots."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from pneumojax import api, cli
from pneumojax.data import pipeline, prepare
from pneumojax.evaluation import threshold
from pneumojax.train import evaluator, files, parallel
from pneumojax.trained import evaluate, load

PLOTS = ('roc.png', 'pr.png', 'confusion_matrix.png', 'calibration.png', 'training_curves.png', 'errors.png')


def test_most_confident_errors():
  labels = np.array([1, 0, 1, 0, 1])
  p = np.array([0.2, 0.9, 0.45, 0.5, 0.8])  # errors at 0.5: 0 (0.3 below), 1 (0.4 above), 2 (0.05), 3 (0.0)
  order = evaluate.most_confident_errors(labels, np.stack([1 - p, p], axis=1), 0.5, 3)
  assert order.tolist() == [1, 0, 2]
  # Three classes: the margin is P(predicted) - P(true).
  probs = np.array([[.1, .8, .1], [.5, .3, .2], [.4, .35, .25], [.2, .2, .6]])  # margins .7, .2, .05; right
  assert evaluate.most_confident_errors(np.array([0, 1, 1, 2]), probs, None, 5).tolist() == [0, 1, 2]


@pytest.fixture(scope='module')
def evaluated(trained_run):
  _, workdir, _ = trained_run
  return api.load_run(workdir).evaluate('test')


@pytest.fixture(scope='module')
def outputs(trained_run, evaluated):
  """The probabilities and labels of val and test, recomputed here with the evaluated checkpoint."""
  config, workdir, _ = trained_run
  dp = parallel.DataParallel('jit')
  state = dp.replicate(load.load_run(workdir).state)
  builder = prepare.get_builder(config.data)
  return {split: evaluator.outputs(dp, state, pipeline.eval_dataset(builder, config.data, split, 256)[0]
                                   .as_numpy_iterator()).outputs.compute() for split in ('val_pd', 'test')}


def test_threshold_is_chosen_on_validation_outputs_only(trained_run, evaluated, outputs):
  config, workdir, results = trained_run
  rule = config.eval.threshold_rule  # the default, 'youden'
  on_val = threshold.choose(outputs['val_pd']['label'], outputs['val_pd']['probs'][:, 1], rule)
  on_test = threshold.choose(outputs['test']['label'], outputs['test']['probs'][:, 1], rule)
  assert on_val != pytest.approx(on_test)  # Otherwise this test could not see a leak.
  assert evaluated['threshold']['threshold'] == pytest.approx(on_val)
  assert evaluated['threshold']['chosen_on'] == 'val_pd'
  assert evaluated['operating_points']['validation-chosen threshold']['threshold'] == pytest.approx(on_val)
  # The end of training chose the same one, and stored it for `predict`.
  assert results['test_at_val_threshold']['threshold'] == pytest.approx(on_val)
  assert json.loads((workdir / files.THRESHOLD).read_text())['threshold'] == pytest.approx(on_val)


def test_metrics_json_agrees_with_sklearn(trained_run, evaluated, outputs):
  _, workdir, results = trained_run
  saved = json.loads((workdir / 'eval' / 'test' / evaluate.METRICS).read_text())
  assert saved['split'] == 'test' and saved['checkpoint_step'] == results['checkpoint_step']
  assert saved['checkpoint'].endswith(f'checkpoints/{results["checkpoint_step"]}')
  assert saved['data']['resolution'] == 64 and "'val_pd'" in saved['protocol']
  assert saved['num_examples'] == 624 and saved['bootstrap']['unit'] == 'patient'
  labels, scores = outputs['test']['label'], outputs['test']['probs'][:, 1]
  for name, op in saved['operating_points'].items():
    predicted = scores >= op['threshold']
    assert op['auc'] == pytest.approx(skm.roc_auc_score(labels, scores)), name
    assert op['pr_auc'] == pytest.approx(skm.average_precision_score(labels, scores)), name
    assert op['sensitivity'] == pytest.approx(skm.recall_score(labels, predicted)), name
    assert op['balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(labels, predicted)), name
    assert op['confusion_matrix'] == skm.confusion_matrix(labels, predicted).tolist(), name
    for metric in ('accuracy', 'balanced_accuracy', 'auc', 'sensitivity'):
      low, high = op['ci95'][metric]
      assert low <= op[metric] <= high and high - low < 0.3, (name, metric)
  assert saved['operating_points']['fixed threshold']['auc'] == pytest.approx(results['test']['auc'], abs=1e-6)


def test_plots_are_readable_pngs(trained_run, evaluated):
  _, workdir, _ = trained_run
  for name in PLOTS:
    path = workdir / 'eval' / 'test' / name
    with Image.open(path) as image:
      assert image.format == 'PNG', name
      assert image.width >= 500 and image.height >= 400, (name, image.size)
      assert len(np.unique(np.asarray(image.convert('L')))) > 20, name  # not blank
    assert path.stat().st_size > 10_000, name


def test_training_history_comes_from_the_event_files(trained_run):
  _, workdir, _ = trained_run
  history = evaluate.training_history(workdir)
  assert history['val/auc'][0].tolist() == [3, 6]  # validation every 3 steps
  assert history['train/loss'][0].tolist() == [2, 3, 4, 6]  # logged every 2 steps and at each validation
  assert np.all(np.isfinite(history['train/loss'][1]))


def test_eval_command_options_override_the_run_config(trained_run, tmp_path, capsys):
  _, workdir, _ = trained_run
  copy = shutil.copytree(workdir, tmp_path / 'run')  # This evaluation stores another threshold.
  cli.main(['eval', '--workdir', str(copy), '--split', 'val_pd', '--threshold_rule', 'youden',
            '--bootstrap_samples', '20'])
  printed = json.loads(capsys.readouterr().out)
  assert printed['threshold']['rule'].startswith("Youden's J")
  assert json.loads((copy / files.THRESHOLD).read_text()) == printed['threshold']
  saved = json.loads((copy / 'eval' / 'val_pd' / evaluate.METRICS).read_text())
  assert saved['bootstrap']['resamples'] == 20
  assert 'optimistic' in saved['protocol']  # evaluated on the split that chose the threshold


def test_eval_reproduces_the_test_metrics_of_training(trained_run):
  _, workdir, results = trained_run
  evaluated = api.load_run(workdir).evaluate('test', bootstrap_samples=10)
  assert evaluated['checkpoint_step'] == results['checkpoint_step']
  assert evaluated['operating_points']['fixed threshold']['auc'] == pytest.approx(results['test']['auc'], abs=1e-6)
  assert (workdir / 'eval' / 'test' / 'metrics.json').exists()
