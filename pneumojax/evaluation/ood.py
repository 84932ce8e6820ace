"""Out-of-distribution scores: how far an image's features lie from the training images' (Lee et al., "A simple
unified framework for detecting out-of-distribution samples and adversarial attacks", NeurIPS 2018).

The training features of each class are modelled as a Gaussian with its own mean and a covariance shared by the
classes (Ledoit-Wolf shrinkage, well conditioned even with fewer images than feature dimensions); an image's score
is its Mahalanobis distance to the nearest class mean. The flagging threshold is a high quantile of the scores of
held-out in-distribution images (the validation split): by construction about 1 - quantile of such images are
flagged.
"""

import dataclasses

import numpy as np
from sklearn.covariance import LedoitWolf


@dataclasses.dataclass(frozen=True)
class Gaussians:
  """Class-conditional Gaussians with a shared covariance: `means` [k, D], `precision` [D, D] (its inverse)."""
  means: np.ndarray
  precision: np.ndarray


def fit(features, labels, num_classes: int) -> Gaussians:
  """The Gaussians of `features` [N, D] with class `labels` [N]; every class must have examples."""
  features, labels = np.asarray(features, np.float64), np.asarray(labels)
  missing = [c for c in range(num_classes) if not np.any(labels == c)]
  if missing:
    raise ValueError(f'No training features of class {missing}: the class means cannot be estimated.')
  means = np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])
  shared = LedoitWolf(assume_centered=True).fit(features - means[labels])
  return Gaussians(means, shared.precision_)


def distances(gaussians: Gaussians, features) -> np.ndarray:
  """[N] Mahalanobis distances of `features` [N, D] to the nearest class mean."""
  offsets = np.asarray(features, np.float64)[:, None, :] - gaussians.means[None]  # [N, k, D]
  squared = np.einsum('nkd,de,nke->nk', offsets, gaussians.precision, offsets)
  return np.sqrt(np.maximum(squared.min(axis=1), 0))
