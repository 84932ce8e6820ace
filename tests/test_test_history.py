"""The test-selected protocol's history (train/test_history.py): which evaluation it reports."""

import numpy as np
import pytest

from pneumojax.evaluation import metrics
from pneumojax.train import test_history

pytestmark = pytest.mark.smoke


def test_test_selected_ties_go_to_the_earliest_and_nan_ranks_last():
  history = [{'step': 1, 'metrics': {'auc': float('nan')}}, {'step': 2, 'metrics': {'auc': 0.8}},
             {'step': 3, 'metrics': {'auc': 0.8}}, {'step': 4, 'metrics': {'auc': 0.7}}]
  assert test_history.best(history)['step'] == 2


def test_a_test_evaluation_also_records_the_threshold_the_test_outputs_choose():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 200)
  scores = np.clip(0.75 + 0.2 * labels + rng.normal(0, 0.15, 200), 0, 1)  # every score high: 0.5 is a poor threshold
  collected = metrics.EvalMetrics.single_from_model_output(
      probs=np.stack([1 - scores, scores], axis=1), label=labels, mask=np.ones(200), loss=np.zeros(200))
  recorded = test_history.metrics(collected)
  oracle = recorded['at_test_threshold']
  assert recorded['balanced_accuracy'] == collected.compute()['balanced_accuracy']  # at 0.5
  # Youden's J on the test outputs: no threshold gives a higher test balanced accuracy.
  best = max(collected.compute(t)['balanced_accuracy'] for t in np.unique(scores))
  assert oracle['balanced_accuracy'] == pytest.approx(best) and best > recorded['balanced_accuracy'] + 0.1
  assert oracle['threshold'] > 0.5
