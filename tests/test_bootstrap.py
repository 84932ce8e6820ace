"""Percentile bootstrap intervals that resample patients, not images."""

import functools
import math

import numpy as np
import pytest

from pneumojax.evaluation import bootstrap

pytestmark = pytest.mark.smoke


def _recording_metric(seen, labels, probs):
  """Records which images (their index is stored as the score) a resample holds."""
  seen.append(probs[:, 1].astype(int))
  return {'fraction_positive': float(np.mean(labels))}


def test_bootstrap_draws_whole_patients():
  patient_ids = np.array(['a', 'b', 'b', 'c', 'c', 'c', 'd', 'e', 'e', 'f'])
  labels = np.array([0, 1, 1, 0, 0, 0, 1, 1, 1, 0])
  probs = np.stack([np.zeros(10), np.arange(10)], axis=1)
  seen = []
  intervals = bootstrap.patient_bootstrap(functools.partial(_recording_metric, seen), labels, probs, patient_ids,
                                          num_resamples=200, seed=0)
  resamples = seen[1:]  # The first call is on the data itself.
  assert len(resamples) == 200
  for images in resamples:
    counts = np.bincount(images, minlength=10)
    for patient in set(patient_ids):
      # Every image of a patient appears as often as the patient was drawn.
      assert len(set(counts[patient_ids == patient])) == 1
    assert sum(counts[patient_ids == p][0] for p in set(patient_ids)) == 6  # 6 patients drawn each time
  low, high = intervals['fraction_positive']
  assert 0 <= low < np.mean(labels) < high <= 1


def _accuracy(labels, probs):
  """A cheap metric: these tests are about the resampling."""
  return {'accuracy': float(np.mean((probs[:, 1] >= 0.5) == labels))}


def test_bootstrap_interval_of_independent_images_is_the_binomial_one():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 400)
  correct = rng.random(400) < 0.8
  scores = np.where(correct, labels, 1 - labels).astype(float)
  probs = np.stack([1 - scores, scores], axis=1)
  accuracy = np.mean(correct)
  low, high = bootstrap.patient_bootstrap(_accuracy, labels, probs, np.arange(400), 2000, seed=0)['accuracy']
  half_width = 1.96 * math.sqrt(accuracy * (1 - accuracy) / 400)
  assert low == pytest.approx(accuracy - half_width, abs=0.01)
  assert high == pytest.approx(accuracy + half_width, abs=0.01)


def test_bootstrap_by_patient_is_wider_when_a_patients_images_agree():
  # 100 patients of 4 images each, all 4 right or all 4 wrong: 100 independent outcomes, not 400.
  rng = np.random.default_rng(2)
  labels = np.repeat(rng.integers(0, 2, 100), 4)
  correct = np.repeat(rng.random(100) < 0.7, 4)
  scores = np.where(correct, labels, 1 - labels).astype(float)
  probs = np.stack([1 - scores, scores], axis=1)

  def width(patient_ids):
    low, high = bootstrap.patient_bootstrap(_accuracy, labels, probs, patient_ids, 1000, seed=0)['accuracy']
    return high - low

  assert width(np.repeat(np.arange(100), 4)) > 1.6 * width(np.arange(400))  # about sqrt(4) = 2

