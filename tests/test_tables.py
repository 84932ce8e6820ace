"""The results tables of a folder of runs: groups by config, mean and sd over seeds."""

import csv
import json
import math

import numpy as np
import pytest

from pneumojax.studies import tables
from pneumojax.train import files
from tests.helpers import SWEPT_LEARNING_RATES, SWEPT_SEEDS


def test_table_means_and_sds_match_the_results_files(swept):
  _, out, runs, _, _ = swept
  with open(out / 'results.csv') as f:
    rows = {float(row['optim.learning_rate']): row for row in csv.DictReader(f)}
  assert sorted(rows) == SWEPT_LEARNING_RATES
  for lr in SWEPT_LEARNING_RATES:
    recorded = [json.loads((out / r.name / files.RESULTS).read_text()) for r in runs
                if r.overrides['optim.learning_rate'] == lr]
    row = rows[lr]
    assert int(row['n']) == len(SWEPT_SEEDS) and row['seeds'] == '0 1'
    for section in ('test', 'test_at_val_threshold', 'test_selected'):
      for metric in tables.METRICS:
        values = np.array([f[section][metric] for f in recorded], float)
        # Sample standard deviation over seeds: ddof=1.
        np.testing.assert_allclose(float(row[f'{section}.{metric}.mean']), values.mean(), rtol=1e-9)
        np.testing.assert_allclose(float(row[f'{section}.{metric}.sd']), values.std(ddof=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(float(row['wall_time_s_mean']), np.mean([f['run']['wall_time_s'] for f in recorded]))
  table = (out / 'results.md').read_text()
  first = [json.loads((out / r.name / files.RESULTS).read_text())['test']['auc'] for r in runs[:2]]
  assert f'{np.mean(first):.3f} ± {np.std(first, ddof=1):.3f}' in table
  assert 'optim.learning_rate=0.001' in table and 'TEST set' in table


def test_a_retired_config_field_of_older_runs_is_not_a_varying_field(swept, tmp_path):
  _, out, runs, _, _ = swept
  for run in runs[:2]:  # two seeds of one group: only the seed differs
    (tmp_path / run.name).mkdir()
    results = json.loads((out / run.name / files.RESULTS).read_text())
    if run is runs[0]:
      results['config']['model']['num_classes'] = 2  # as runs recorded it before data.task set it
    (tmp_path / run.name / files.RESULTS).write_text(json.dumps(results))
  assert tables.varying_fields(tables.load_runs(tmp_path)) == []


def test_balanced_accuracy_is_derived_where_older_results_lack_it():
  two_classes = {'accuracy': 0.8, 'sensitivity': 0.9, 'specificity': 0.6, 'confusion_matrix': [[6, 4], [1, 9]]}
  assert tables.recorded_metric(two_classes, 'balanced_accuracy') == pytest.approx(0.75)
  assert tables.recorded_metric({**two_classes, 'balanced_accuracy': 0.7}, 'balanced_accuracy') == 0.7  # recorded
  three_classes = {'accuracy': 0.6, 'confusion_matrix': [[2, 0, 0], [1, 1, 0], [0, 1, 1]]}
  assert tables.recorded_metric(three_classes, 'balanced_accuracy') == pytest.approx((1 + 0.5 + 0.5) / 3)
  assert math.isnan(tables.recorded_metric({'confusion_matrix': [[2, 0], [0, 0]]}, 'balanced_accuracy'))
  assert math.isnan(tables.recorded_metric({**two_classes, 'sensitivity': math.nan}, 'balanced_accuracy'))
  assert math.isnan(tables.recorded_metric(three_classes, 'sensitivity'))
  runs = [{'results': {'test': two_classes}}, {'results': {'val': two_classes}}]
  assert tables.metric_values(runs, 'test', 'balanced_accuracy') == [pytest.approx(0.75)]
