"""The operating threshold, chosen on validation outputs by the configured rule."""

import numpy as np
import pytest

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

