"""Evaluation metrics against values worked out by hand (and cross-checked with scikit-learn)."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from pneumojax.evaluation import metrics
from tests.helpers import LABELS, SCORES  # five pneumonia and five normal examples; see there

pytestmark = pytest.mark.smoke

LOSSES = np.array([0.1, 2.3, 0.2, 0.9, 0.4, 0.6, 0.6, 0.2, 1.2, 0.1], np.float32)
# At threshold 0.5: TP = 4, FN = 1, FP = 2, TN = 3.
EXPECTED = {
    'accuracy': 7 / 10,
    'balanced_accuracy': (4 / 5 + 3 / 5) / 2,  # (sensitivity + specificity) / 2
    # Pairs (pneumonia, normal) ranked right, out of 25: 0.95 beats 5, 0.8 and 0.7 beat 4, 0.55 beats 3,
    # 0.3 beats 2.
    'auc': 18 / 25,
    # Ranked by score, the pneumonia images are 1st, 3rd, 4th, 6th and 8th: the mean precision at each of them.
    'pr_auc': (1 / 1 + 2 / 3 + 3 / 4 + 4 / 6 + 5 / 8) / 5,
    'sensitivity': 4 / 5,
    'specificity': 3 / 5,
    'precision': 4 / 6,
    'f1': 2 * 4 / (2 * 4 + 2 + 1),
    'num_examples': 10,
    'confusion_matrix': [[3, 2], [1, 4]],
}


def outputs(labels=LABELS, scores=SCORES, losses=LOSSES, mask=None):
  return {'probs': np.stack([1 - scores, scores], axis=1), 'label': labels,
          'mask': np.ones(len(labels)) if mask is None else mask, 'loss': losses}


def evaluate(*batches, threshold=0.5):
  collection = metrics.EvalMetrics.empty()
  for batch in batches:
    collection = collection.merge(metrics.EvalMetrics.single_from_model_output(**batch))
  return collection.compute(threshold)


def test_binary_metrics_match_hand_computed_values():
  result = metrics.binary_metrics(LABELS, SCORES)
  assert result.pop('confusion_matrix') == EXPECTED['confusion_matrix']
  assert result == pytest.approx({k: v for k, v in EXPECTED.items() if k != 'confusion_matrix'})


def test_binary_metrics_agree_with_sklearn():
  result = metrics.binary_metrics(LABELS, SCORES)
  preds = SCORES >= 0.5
  assert result['auc'] == pytest.approx(skm.roc_auc_score(LABELS, SCORES))
  assert result['pr_auc'] == pytest.approx(skm.average_precision_score(LABELS, SCORES))
  assert result['accuracy'] == pytest.approx(skm.accuracy_score(LABELS, preds))
  assert result['balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(LABELS, preds))
  assert result['sensitivity'] == pytest.approx(skm.recall_score(LABELS, preds))
  assert result['specificity'] == pytest.approx(skm.recall_score(LABELS, preds, pos_label=0))
  assert result['precision'] == pytest.approx(skm.precision_score(LABELS, preds))
  assert result['f1'] == pytest.approx(skm.f1_score(LABELS, preds))


def test_threshold_moves_the_decision_not_the_auc():
  # At 0.75 only 0.95 and 0.8 (pneumonia) and 0.9 (normal) are called pneumonia.
  result = metrics.binary_metrics(LABELS, SCORES, threshold=0.75)
  assert result['sensitivity'] == pytest.approx(2 / 5)
  assert result['specificity'] == pytest.approx(4 / 5)
  assert result['confusion_matrix'] == [[4, 1], [3, 2]]
  assert result['auc'] == pytest.approx(EXPECTED['auc'])
  # A score equal to the threshold counts as pneumonia.
  assert metrics.binary_metrics([1], [0.75], threshold=0.75)['sensitivity'] == 1.0


def test_undefined_metrics_are_nan_not_zero():
  all_normal = metrics.binary_metrics([0, 0, 0], [0.1, 0.7, 0.2])
  assert math.isnan(all_normal['auc']) and math.isnan(all_normal['pr_auc'])
  assert math.isnan(all_normal['sensitivity']) and math.isnan(all_normal['balanced_accuracy'])
  assert all_normal['specificity'] == pytest.approx(2 / 3)
  nothing_predicted = metrics.binary_metrics([0, 1, 1], [0.1, 0.2, 0.3])
  assert math.isnan(nothing_predicted['precision'])
  assert nothing_predicted['sensitivity'] == 0.0
  assert nothing_predicted['balanced_accuracy'] == 0.5  # (0 + 1) / 2: defined.
  assert nothing_predicted['f1'] == 0.0  # 2TP / (2TP + FP + FN) = 0 / 2: defined.


def test_collection_computes_the_same_metrics_and_the_mean_loss():
  result = evaluate(outputs())
  assert result.pop('loss') == pytest.approx(LOSSES.mean())
  assert result == metrics.binary_metrics(LABELS, SCORES)


def test_padding_never_changes_any_metric():
  # Padded rows carry the wrong label, a confident wrong score and a huge loss.
  padded = outputs(labels=np.concatenate([LABELS, [0, 1, 0]]),
                   scores=np.concatenate([SCORES, [0.99, 0.01, 1.0]]).astype(np.float32),
                   losses=np.concatenate([LOSSES, [1e6, 1e6, np.nan]]).astype(np.float32),
                   mask=np.concatenate([np.ones(10), np.zeros(3)]))
  assert evaluate(padded) == evaluate(outputs())


def test_merging_batches_equals_one_big_batch():
  order = np.random.default_rng(0).permutation(10)
  labels, scores, losses = LABELS[order], SCORES[order], LOSSES[order]
  last_mask = np.array([1, 1, 1, 0])  # The last batch is padded up to 4 with a copy of its first row.
  batches = [outputs(labels[:3], scores[:3], losses[:3]),
             outputs(labels[3:7], scores[3:7], losses[3:7]),
             outputs(*(np.concatenate([x[7:], x[7:8]]) for x in (labels, scores, losses)), mask=last_mask)]
  merged, whole = evaluate(*batches), evaluate(outputs())
  assert merged.pop('loss') == pytest.approx(whole.pop('loss'))
  assert merged == whole


def test_multiclass_metrics():
  labels = np.array([0, 1, 2, 2, 1, 0])
  probs = np.array([[.7, .2, .1], [.2, .5, .3], [.1, .1, .8], [.3, .4, .3], [.6, .3, .1], [.5, .4, .1]])
  result = metrics.classification_metrics(labels, probs)
  # Wrong: the second 2 (argmax 1) and the last 1 (argmax 0).
  assert result['accuracy'] == pytest.approx(4 / 6)
  assert result['balanced_accuracy'] == pytest.approx((2 / 2 + 1 / 2 + 1 / 2) / 3)  # the mean recall
  assert result['balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(labels, probs.argmax(1)))
  assert math.isnan(metrics.classification_metrics(labels[labels < 2], probs[labels < 2])['balanced_accuracy'])
  assert result['confusion_matrix'] == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
  for c in range(3):
    assert result[f'auc_class_{c}'] == pytest.approx(skm.roc_auc_score(labels == c, probs[:, c]))
  assert result['auc'] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class='ovr'))


def test_train_metrics_average_the_steps():
  collection = metrics.TrainMetrics.empty()
  for loss, accuracy in [(0.9, 0.5), (0.6, 0.75), (0.3, 1.0)]:
    collection = collection.merge(metrics.TrainMetrics.single_from_model_output(
        loss=np.float32(loss), accuracy=np.float32(accuracy), learning_rate=1e-3))
  result = collection.compute()
  assert float(result['loss']) == pytest.approx(0.6)
  assert float(result['accuracy']) == pytest.approx(0.75)
