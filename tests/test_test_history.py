"""The test-selected protocol's history (train/test_history.py): which evaluation it reports."""

import pytest

from pneumojax.train import test_history

pytestmark = pytest.mark.smoke


def test_test_selected_ties_go_to_the_earliest_and_nan_ranks_last():
  history = [{'step': 1, 'metrics': {'auc': float('nan')}}, {'step': 2, 'metrics': {'auc': 0.8}},
             {'step': 3, 'metrics': {'auc': 0.8}}, {'step': 4, 'metrics': {'auc': 0.7}}]
  assert test_history.best(history)['step'] == 2
