"""The hermetic smoke tier, end to end in seconds without ../shared: a tiny synthetic dataset in the Kaggle layout
is prepared, a small CNN trained on it, evaluated and used to predict (`pytest -m smoke` runs these and the other
quick hermetic tests)."""

import csv

import numpy as np
import pytest
from sklearn import metrics as skm

from pneumojax import api, train
from pneumojax.train import files
from pneumojax.trained import evaluate
from tests.helpers import SYNTHETIC_COUNTS, tiny_config, write_synthetic_dataset

pytestmark = pytest.mark.smoke


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  """(config, workdir, results, the dataset's folder) of 24 steps on the synthetic data at 28 px."""
  root = tmp_path_factory.mktemp('smoke')
  dataset = write_synthetic_dataset(root / 'download')
  config = tiny_config(root / 'tfds', num_steps=24, manual_dir=dataset, resolution=28)
  config.data.val_fraction = 0.25  # val_pd: 4 normal, 2 bacterial and 2 viral patients
  config.optim.learning_rate = 3e-3
  config.train.update(dict(batch_size=8, eval_batch_size=16, eval_every_steps=8, log_every_steps=8))
  config.eval.bootstrap_samples = 20
  workdir = root / 'run'
  return config, workdir, train.train_and_evaluate(config, str(workdir)), dataset


def test_training_learns_the_synthetic_classes(smoke_run):
  _, workdir, results, _ = smoke_run
  normal, bacteria, virus = SYNTHETIC_COUNTS['test']
  assert results['test']['num_examples'] == normal + bacteria + virus
  assert results['val']['split'] == 'val_pd' and results['val']['num_examples'] == 8
  assert results['checkpoint_step'] in (8, 16, 24)
  assert results['test']['auc'] >= 0.9, results['test']
  assert (workdir / files.RESULTS).exists() and (workdir / files.THRESHOLD).exists()


def test_eval_reproduces_the_final_test(smoke_run):
  _, workdir, results, _ = smoke_run
  evaluated = api.load_run(workdir).evaluate('test')
  assert evaluated['checkpoint_step'] == results['checkpoint_step']
  for name, entry in (('fixed threshold', 'test'), ('validation-chosen threshold', 'test_at_val_threshold')):
    point = evaluated['operating_points'][name]
    assert point['accuracy'] == pytest.approx(results[entry]['accuracy']), name
    assert point['auc'] == pytest.approx(results[entry]['auc'], abs=1e-6), name
  assert (workdir / 'eval' / 'test' / evaluate.METRICS).exists()


def test_predict_gives_the_probabilities_of_evaluation(smoke_run, tmp_path):
  _, workdir, results, dataset = smoke_run
  summary = api.load_run(workdir).predict_files([dataset / 'test'], tmp_path / 'out.csv')
  with open(tmp_path / 'out.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert summary['errors'] == 0 and len(rows) == sum(SYNTHETIC_COUNTS['test'])
  labels = np.array(['PNEUMONIA' in row['path'] for row in rows])
  probabilities = np.array([float(row['probability_pneumonia']) for row in rows])
  # The files, read and preprocessed by predict, give the same ranking as the prepared test split did.
  assert skm.roc_auc_score(labels, probabilities) == pytest.approx(results['test']['auc'], abs=1e-6)
  threshold = results['test_at_val_threshold']['threshold']
  assert [row['label'] for row in rows] == ['pneumonia' if p >= threshold else 'normal' for p in probabilities]
