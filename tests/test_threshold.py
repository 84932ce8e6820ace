"""The operating threshold, chosen on validation outputs by the configured rule."""

import numpy as np
import pytest

from pneumojax.config import default_config
from pneumojax.data import tasks
from pneumojax.evaluation import metrics, threshold
from tests.helpers import LABELS, SCORES

pytestmark = pytest.mark.smoke


def test_thresholds_chosen_by_hand():
  # Pneumonia scores 0.95 0.8 0.7 0.55 0.3, normal 0.9 0.6 0.45 0.2 0.1 (tests/helpers.py).
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


def _balanced_accuracy(labels, scores, t):
  return metrics.binary_metrics(labels, scores, t)['balanced_accuracy']


# Validation outputs of a two-class task where a tenth of the positives look like negatives (as viral films that look
# bacterial): sensitivity >= 0.95 needs a threshold below most negatives, while 0.6 keeps 90% sensitivity and calls
# no negative positive.
_VAL_LABELS = np.array([1] * 100 + [0] * 300)
_VAL_SCORES = np.concatenate([np.linspace(0.6, 0.9, 90), np.linspace(0.05, 0.3, 10), np.linspace(0.1, 0.5, 300)])


@pytest.mark.parametrize('task', ['binary', 'bacteria_vs_virus'])
def test_the_default_rule_maximises_balanced_accuracy_on_validation_for_every_two_class_task(task):
  config = default_config()
  config.data.task = task
  assert tasks.num_classes(config.data) == 2
  outputs = {'probs': np.stack([1 - _VAL_SCORES, _VAL_SCORES], axis=1), 'label': _VAL_LABELS}
  point = threshold.operating_point(outputs, config.eval, 'val_pd', 5)
  assert config.eval.threshold_rule == 'youden' and point['rule'].startswith("Youden's J")
  # Brute force over every candidate threshold (each distinct score): none has a higher balanced accuracy.
  best = max(_balanced_accuracy(_VAL_LABELS, _VAL_SCORES, t) for t in np.unique(_VAL_SCORES))
  assert _balanced_accuracy(_VAL_LABELS, _VAL_SCORES, point['threshold']) == pytest.approx(best)
  # The screening rule on the same outputs: sensitivity >= 0.95 at the cost of a poor balanced accuracy.
  config.eval.threshold_rule = 'sensitivity'
  screening = threshold.operating_point(outputs, config.eval, 'val_pd', 5)
  at_screening = metrics.binary_metrics(_VAL_LABELS, _VAL_SCORES, screening['threshold'])
  assert screening['rule'] == 'highest threshold with sensitivity >= 0.95' and at_screening['sensitivity'] >= 0.95
  assert best == pytest.approx(0.95) and at_screening['balanced_accuracy'] < 0.6
  assert metrics.binary_metrics(_VAL_LABELS, _VAL_SCORES, screening['threshold'] + 1e-6)['sensitivity'] < 0.95


def test_more_than_two_classes_have_no_threshold():
  config = default_config()
  config.data.task = 'three_class'
  probs = np.full((6, 3), 1 / 3)
  assert threshold.operating_point({'probs': probs, 'label': np.arange(6) % 3}, config.eval, 'val_pd', 1) is None
