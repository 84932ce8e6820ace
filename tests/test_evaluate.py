"""Evaluation: patient bootstrap, the validation-chosen threshold, metrics.json, plots and the HTML report."""

import functools
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from pneumojax import bootstrap, cli, evaluate, metrics, report, threshold
from pneumojax.data import paths, pipeline
from pneumojax.train import loop, parallel, step as step_lib
from tests.test_metrics import LABELS, SCORES

PLOTS = ('roc.png', 'pr.png', 'confusion_matrix.png', 'calibration.png', 'training_curves.png', 'errors.png')


def test_thresholds_chosen_by_hand():
  # Pneumonia scores 0.95 0.8 0.7 0.55 0.3, normal 0.9 0.6 0.45 0.2 0.1 (tests/test_metrics.py).
  # Sensitivity reaches 0.8 at 0.55 (4 of 5) and 1.0 at 0.3. Youden's J = tpr - fpr is 0.4 at 0.7 (0.6 - 0.2),
  # 0.55 (0.8 - 0.4) and 0.3 (1.0 - 0.6), and lower elsewhere: the highest of those thresholds is taken.
  assert threshold.choose(LABELS, SCORES, 'sensitivity', 0.8) == pytest.approx(0.55)
  assert threshold.choose(LABELS, SCORES, 'sensitivity', 0.95) == pytest.approx(0.3)
  assert threshold.choose(LABELS, SCORES, 'youden') == pytest.approx(0.7)
  assert metrics.binary_metrics(LABELS, SCORES, 0.55)['sensitivity'] == pytest.approx(0.8)
  with pytest.raises(ValueError, match='single class'):
    threshold.choose(np.zeros(4), SCORES[:4], 'youden')
  with pytest.raises(ValueError, match='threshold_rule'):
    threshold.choose(LABELS, SCORES, 'accuracy')


def _recording_metric(seen, labels, probs):
  """Records which images (their index is stored as the score) a resample holds."""
  seen.append(probs[:, 1].astype(int))
  return {'fraction_positive': float(np.mean(labels))}


def test_bootstrap_draws_whole_patients():
  patient_ids = np.array(['a', 'b', 'b', 'c', 'c', 'c', 'd', 'e', 'e', 'f'])
  labels = np.array([0, 1, 1, 0, 0, 0, 1, 1, 1, 0])
  probs = np.stack([np.zeros(10), np.arange(10)], axis=1)
  seen = []
  intervals = bootstrap.patient_bootstrap(functools.partial(_recording_metric, seen), labels, probs, patient_ids,
                                          num_resamples=200, seed=0)
  resamples = seen[1:]  # The first call is on the data itself.
  assert len(resamples) == 200
  for images in resamples:
    counts = np.bincount(images, minlength=10)
    for patient in set(patient_ids):
      # Every image of a patient appears as often as the patient was drawn.
      assert len(set(counts[patient_ids == patient])) == 1
    assert sum(counts[patient_ids == p][0] for p in set(patient_ids)) == 6  # 6 patients drawn each time
  low, high = intervals['fraction_positive']
  assert 0 <= low < np.mean(labels) < high <= 1


def _accuracy(labels, probs):
  """A cheap metric: these tests are about the resampling."""
  return {'accuracy': float(np.mean((probs[:, 1] >= 0.5) == labels))}


def test_bootstrap_interval_of_independent_images_is_the_binomial_one():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 400)
  correct = rng.random(400) < 0.8
  scores = np.where(correct, labels, 1 - labels).astype(float)
  probs = np.stack([1 - scores, scores], axis=1)
  accuracy = np.mean(correct)
  low, high = bootstrap.patient_bootstrap(_accuracy, labels, probs, np.arange(400), 2000, seed=0)['accuracy']
  half_width = 1.96 * math.sqrt(accuracy * (1 - accuracy) / 400)
  assert low == pytest.approx(accuracy - half_width, abs=0.01)
  assert high == pytest.approx(accuracy + half_width, abs=0.01)


def test_bootstrap_by_patient_is_wider_when_a_patients_images_agree():
  # 100 patients of 4 images each, all 4 right or all 4 wrong: 100 independent outcomes, not 400.
  rng = np.random.default_rng(2)
  labels = np.repeat(rng.integers(0, 2, 100), 4)
  correct = np.repeat(rng.random(100) < 0.7, 4)
  scores = np.where(correct, labels, 1 - labels).astype(float)
  probs = np.stack([1 - scores, scores], axis=1)

  def width(patient_ids):
    low, high = bootstrap.patient_bootstrap(_accuracy, labels, probs, patient_ids, 1000, seed=0)['accuracy']
    return high - low

  assert width(np.repeat(np.arange(100), 4)) > 1.6 * width(np.arange(400))  # about sqrt(4) = 2


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
  return evaluate.evaluate_checkpoint(str(workdir), 'test')


@pytest.fixture(scope='module')
def outputs(trained_run, evaluated):
  """The probabilities and labels of val and test, recomputed here with the evaluated checkpoint."""
  config, workdir, _ = trained_run
  _, state, _ = evaluate.load_checkpoint(workdir)
  dp = parallel.DataParallel('jit', step_lib.train_step, step_lib.eval_step)
  builder = paths.get_builder(config.data)
  return {split: loop.evaluate(dp, dp.replicate(state), pipeline.eval_dataset(builder, config.data, split, 256)[0])
          .outputs.compute() for split in ('val_pd', 'test')}


def test_threshold_is_chosen_on_validation_outputs_only(trained_run, evaluated, outputs):
  _, workdir, results = trained_run
  on_val = threshold.choose(outputs['val_pd']['label'], outputs['val_pd']['probs'][:, 1], 'sensitivity', 0.95)
  on_test = threshold.choose(outputs['test']['label'], outputs['test']['probs'][:, 1], 'sensitivity', 0.95)
  assert on_val != pytest.approx(on_test)  # Otherwise this test could not see a leak.
  assert evaluated['threshold']['threshold'] == pytest.approx(on_val)
  assert evaluated['threshold']['chosen_on'] == 'val_pd'
  assert evaluated['operating_points']['validation-chosen threshold']['threshold'] == pytest.approx(on_val)
  # The end of training chose the same one, and stored it for `predict`.
  assert results['test_at_val_threshold']['threshold'] == pytest.approx(on_val)
  assert json.loads((workdir / threshold.FILE).read_text())['threshold'] == pytest.approx(on_val)


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
    assert op['confusion_matrix'] == skm.confusion_matrix(labels, predicted).tolist(), name
    for metric in ('accuracy', 'auc', 'sensitivity'):
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


def test_report_is_one_self_contained_page(trained_run, evaluated):
  _, workdir, _ = trained_run
  cli.main(['report', '--workdir', str(workdir)])
  page = (workdir / report.REPORT).read_text()
  assert page.count('src="data:image/png;base64,') == len(PLOTS)
  assert 'src="' not in page.replace('src="data:', '')  # nothing outside the page
  assert 'chose nothing' in page and f'{evaluated["threshold"]["threshold"]:.4f}' in page
  auc = evaluated['operating_points']['fixed threshold']['auc']
  low, high = evaluated['operating_points']['fixed threshold']['ci95']['auc']
  assert f'{auc:.3f} <small>({low:.3f}&ndash;{high:.3f})</small>' in page
  assert '&quot;num_steps&quot;: 6' in page  # the config


def test_eval_command_options_override_the_run_config(trained_run, tmp_path, capsys):
  _, workdir, _ = trained_run
  copy = shutil.copytree(workdir, tmp_path / 'run')  # This evaluation stores another threshold.
  cli.main(['eval', '--workdir', str(copy), '--split', 'val_pd', '--threshold_rule', 'youden',
            '--bootstrap_samples', '20'])
  printed = json.loads(capsys.readouterr().out)
  assert printed['threshold']['rule'].startswith("Youden's J")
  assert json.loads((copy / threshold.FILE).read_text()) == printed['threshold']
  saved = json.loads((copy / 'eval' / 'val_pd' / evaluate.METRICS).read_text())
  assert saved['bootstrap']['resamples'] == 20
  assert 'optimistic' in saved['protocol']  # evaluated on the split that chose the threshold
