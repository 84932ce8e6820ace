"""CLU metric collections for training and evaluation; classification metrics through scikit-learn.

Evaluation collects the probabilities and labels of every real example on the host (padding is dropped as it
is collected) and computes the ranking and threshold metrics once, at the end, over the whole split:

  metrics = EvalMetrics.empty()
  for outputs in eval_outputs:  # dicts of host arrays: probs [b, k], label [b], mask [b], loss [b]
    metrics = metrics.merge(EvalMetrics.single_from_model_output(**outputs))
  results = metrics.compute()

A metric whose denominator is empty (e.g. precision when nothing is predicted positive, AUC on a split with a
single class) is undefined and reported as NaN, never as a made-up 0 or 1.

Balanced accuracy, the mean of the per-class recalls ((sensitivity + specificity) / 2 for two classes), is
reported beside accuracy: the test split's class mix differs from validation's, and accuracy alone rewards
calling every film the majority class. (Results recorded before it was computed lack it: studies/tables.py's
`recorded_metric` derives it from what they hold.)
"""

import flax
import numpy as np
from clu import metrics
from sklearn import metrics as skm


def _ranking(metric, labels: np.ndarray, scores: np.ndarray) -> float:
  """A ranking metric (ROC-AUC, average precision), NaN when `labels` hold a single class (it is undefined)."""
  if len(np.unique(labels)) < 2:
    return float('nan')
  return float(metric(labels, scores))


def _balanced_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
  """The mean recall over the classes; NaN when a class has no example (its recall is undefined, and sklearn
  would average the others without it, with a warning)."""
  if not np.isin(np.arange(num_classes), labels).all():
    return float('nan')
  return float(skm.balanced_accuracy_score(labels, preds))


def binary_metrics(labels, scores, threshold: float = 0.5) -> dict:
  """Metrics of pneumonia (class 1) scores `scores` [n] against `labels` [n] in {0, 1}.

  A score >= `threshold` predicts pneumonia. Returns floats (`num_examples` an int) and the 2x2 confusion
  matrix as nested lists, rows = true class, columns = predicted class.
  """
  labels, scores = np.asarray(labels), np.asarray(scores)
  preds = (scores >= threshold).astype(labels.dtype)
  precision, recall, f1, _ = skm.precision_recall_fscore_support(
      labels, preds, labels=[0, 1], zero_division=np.nan)
  return {
      'accuracy': float(skm.accuracy_score(labels, preds)),
      'balanced_accuracy': _balanced_accuracy(labels, preds, 2),  # (sensitivity + specificity) / 2
      'auc': _ranking(skm.roc_auc_score, labels, scores),
      # Average precision: the step-wise area under the precision-recall curve (no optimistic interpolation).
      'pr_auc': _ranking(skm.average_precision_score, labels, scores),
      'sensitivity': float(recall[1]),
      'specificity': float(recall[0]),
      'precision': float(precision[1]),
      'f1': float(f1[1]),
      'num_examples': len(labels),
      'confusion_matrix': skm.confusion_matrix(labels, preds, labels=[0, 1]).tolist(),
  }


def multiclass_metrics(labels, probs) -> dict:
  """Accuracy and balanced accuracy of the argmax, one-vs-rest AUC per class and their macro mean, confusion
  matrix."""
  labels, probs = np.asarray(labels), np.asarray(probs)
  num_classes = probs.shape[1]
  per_class_auc = [_ranking(skm.roc_auc_score, labels == c, probs[:, c]) for c in range(num_classes)]
  return {
      'accuracy': float(skm.accuracy_score(labels, probs.argmax(axis=1))),
      'balanced_accuracy': _balanced_accuracy(labels, probs.argmax(axis=1), num_classes),
      'auc': float(np.mean(per_class_auc)),  # sklearn's macro one-vs-rest; NaN if a class is absent.
      **{f'auc_class_{c}': auc for c, auc in enumerate(per_class_auc)},
      'num_examples': len(labels),
      'confusion_matrix': skm.confusion_matrix(
          labels, probs.argmax(axis=1), labels=list(range(num_classes))).tolist(),
  }


def predicted_labels(probs, threshold: float = 0.5) -> np.ndarray:
  """The decision: probs[:, 1] >= `threshold` for two classes, the most probable class otherwise."""
  probs = np.asarray(probs)
  if probs.shape[1] == 2:
    return (probs[:, 1] >= threshold).astype(np.int64)
  return probs.argmax(axis=1)


def classification_metrics(labels, probs, threshold: float = 0.5) -> dict:
  """`binary_metrics` on probs[:, 1] for two classes, `multiclass_metrics` otherwise."""
  probs = np.asarray(probs)
  if probs.shape[1] == 2:
    return binary_metrics(labels, probs[:, 1], threshold)
  return multiclass_metrics(labels, probs)


@flax.struct.dataclass
class ProbsAndLabels(metrics.CollectingMetric):
  """Collects `probs` and `label` of the real examples (mask 1) as host numpy arrays."""

  @classmethod
  def from_model_output(cls, probs, label, mask, **_) -> 'ProbsAndLabels':
    real = np.asarray(mask).astype(bool)
    return cls(values={'probs': (np.asarray(probs)[real],), 'label': (np.asarray(label)[real],)})


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  """Evaluation metrics from per-example `probs`, `label`, `mask` and `loss`; see the module docstring."""
  outputs: ProbsAndLabels
  loss: metrics.Average.from_output('loss')  # Masked: padding does not count.

  def compute(self, threshold: float = 0.5) -> dict:
    values = self.outputs.compute()
    return {**classification_metrics(values['label'], values['probs'], threshold),
            'loss': float(self.loss.compute())}


# The train step returns scalar metrics already averaged over the global batch.
TrainMetrics = metrics.Collection.create(
    loss=metrics.Average.from_output('loss'),
    accuracy=metrics.Average.from_output('accuracy'))
