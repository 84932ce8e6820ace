"""The three-class and bacterial-vs-viral tasks: their examples, labels, metrics, evaluation and predictions."""

import csv
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pneumojax import api, train
from pneumojax.data import pipeline, splits, tasks
from pneumojax.train import files, run
from pneumojax.trained import evaluate
from tests.helpers import FULLRES, data_config, tiny_config


@pytest.mark.parametrize('task, counts', [
    ('binary', (234, 390)),
    ('three_class', (234, 242, 148)),
    ('bacteria_vs_virus', (242, 148)),  # pneumonia images only
])
def test_test_split_of_each_task(builder64, tfds_dir, task, counts):
  config = data_config(tfds_dir, task=task)
  assert pipeline.split_info(builder64, 'test', config).class_counts == counts
  meta = splits.split_metadata(builder64, 'test', config)
  # Row i of the metadata is the i-th example of the dataset, label included.
  examples = list(tfds.as_numpy(splits.load_split(builder64, 'test', config).map(
      lambda ex: (ex['filename'], ex['label']))))
  assert [f.decode() for f, _ in examples] == meta['filename'].tolist()
  assert [label for _, label in examples] == meta['label'].tolist()
  if task == 'bacteria_vs_virus':
    assert all(('virus' in f) == bool(label) for f, label in zip(meta['filename'], meta['label']))


def test_validation_patients_are_the_same_for_every_task(builder64, tfds_dir):
  binary = splits.split_metadata(builder64, 'val_pd', data_config(tfds_dir))
  subtype = splits.split_metadata(builder64, 'val_pd', data_config(tfds_dir, task='bacteria_vs_virus'))
  assert set(subtype['patient_id']) == set(binary['patient_id'][binary['label'] == 1])


@pytest.mark.smoke
@pytest.mark.parametrize('task', list(tasks.CLASS_NAMES))
def test_the_model_has_one_output_per_class_of_the_task(tmp_path, task):
  config = tiny_config(tmp_path, 3)
  config.data.task = task
  output_layer = run.abstract_state(config).params['Dense_0']['kernel']  # simple_cnn without hidden layers
  assert output_layer.shape[-1] == tasks.num_classes(config.data) == len(tasks.CLASS_NAMES[task])


@pytest.fixture(scope='module')
def three_class_run(builder64, tfds_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('three_class')
  config = tiny_config(tfds_dir, 3)
  config.data.task = 'three_class'
  config.eval.bootstrap_samples = 20
  return workdir, train.train_and_evaluate(config, str(workdir))


def test_three_class_evaluation(three_class_run):
  workdir, results = three_class_run
  assert 'test_at_val_threshold' not in results and not (workdir / files.THRESHOLD).exists()
  evaluated = api.load_run(workdir).evaluate('test')
  assert evaluated['class_names'] == ['normal', 'bacteria', 'virus'] and evaluated['threshold'] is None
  op = evaluated['operating_points']['most probable class']
  per_class = [op[f'auc_class_{c}'] for c in range(3)]
  assert op['auc'] == pytest.approx(np.mean(per_class)) and op['auc'] == pytest.approx(results['test']['auc'])
  assert set(op['ci95']) >= {'auc', 'auc_class_0', 'auc_class_1', 'auc_class_2', 'accuracy'}
  assert np.array(op['confusion_matrix']).sum(axis=1).tolist() == [234, 242, 148]
  assert (workdir / 'eval' / 'test' / 'roc.png').exists() and (workdir / 'eval' / 'test' / 'errors.png').exists()
  assert 'no threshold' in json.loads((workdir / 'eval' / 'test' / evaluate.METRICS).read_text())['protocol']


def test_three_class_predictions(three_class_run, tmp_path):
  workdir, _ = three_class_run
  api.load_run(workdir).predict_files([FULLRES / 'val'], tmp_path / 'out.csv')
  with open(tmp_path / 'out.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 16
  for row in rows:
    probs = np.array([float(row[f'probability_{c}']) for c in ('normal', 'bacteria', 'virus')])
    assert probs.sum() == pytest.approx(1, abs=1e-5)
    assert float(row['probability_pneumonia']) == pytest.approx(1 - probs[0], abs=1e-6)
    assert row['label'] == ('normal', 'bacteria', 'virus')[probs.argmax()]
