"""Percentile bootstrap confidence intervals that resample patients, not images.

Images of one patient are correlated (same child, often the same illness): resampling images as if they were
independent gives intervals that are too narrow. Each resample draws as many patients as the split holds, with
replacement, and takes all images of every patient drawn. The threshold is held fixed: it was chosen on
validation data, so it is not part of what varies between test resamples.
"""

import warnings
from collections.abc import Callable

import numpy as np
import scipy.stats


def patient_bootstrap(metric_fn: Callable[[np.ndarray, np.ndarray], dict], labels, probs, patient_ids,
                      num_resamples: int, seed: int, confidence: float = 0.95) -> dict[str, list[float]]:
  """`{name: [low, high]}` for every float that `metric_fn(labels, probs)` returns.

  An interval is NaN where the metric is undefined on some resample (e.g. sensitivity without a positive).
  """
  labels, probs = np.asarray(labels), np.asarray(probs)
  patients, patient_of_image = np.unique(np.asarray(patient_ids), return_inverse=True)
  images_of_patient = np.split(np.argsort(patient_of_image, kind='stable'),
                               np.cumsum(np.bincount(patient_of_image))[:-1])
  names = [k for k, v in metric_fn(labels, probs).items() if isinstance(v, float)]

  def statistic(drawn_patients):
    images = np.concatenate([images_of_patient[p] for p in drawn_patients])
    values = metric_fn(labels[images], probs[images])
    return np.array([values[k] for k in names])

  with warnings.catch_warnings():
    # A metric constant over the resamples (specificity 1 when nothing is called positive) has the interval [v, v].
    warnings.simplefilter('ignore', scipy.stats.DegenerateDataWarning)
    result = scipy.stats.bootstrap(
        (np.arange(len(patients)),), statistic, n_resamples=num_resamples, vectorized=False,
        confidence_level=confidence, method='percentile', rng=np.random.default_rng(seed))
  low, high = result.confidence_interval
  return {k: [float(lo), float(hi)] for k, lo, hi in zip(names, low, high)}
