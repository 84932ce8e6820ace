"""`Classifier`: the fields every model shares, and the factories of its layers and of its head.

A Linen module is a dataclass: a family subclasses `Classifier`, adds its own fields (with defaults) and builds
its layers with `self.conv(...)`, `self.norm(train, ...)` and `self.dropout(rate, train)` (models/layers.py) and
its output with `self.classify(features, train)`, so that no family repeats the shared fields or the BatchNorm partial.

`batch_axis`: in training, the name of the device axis the batch is split over (train/parallel.py sets it): BatchNorm
statistics and dropout masks are then those of the global batch, so a run computes the same on 1 or N devices.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models.head import HEAD, Head
from pneumojax.models.layers import FLAX, Dropout, Layers


class Classifier(nn.Module):
  """Images [B, H, W, C] float32 -> float32 logits [B, num_classes] (or features: `features_only`)."""
  num_classes: int = 2
  hidden: Sequence[int] = ()       # widths of the head's relu dense layers, before its output layer.
  dropout_rate: float = 0.0        # dropout before each dense layer of the head.
  features_only: bool = False      # True: the pooled float32 features [B, D], without the head (probing, caching).
  freeze_batch_norm: bool = False  # True: BatchNorm normalises with, and keeps, its running statistics in training.
  dtype: Any = jnp.float32         # compute dtype; parameters stay float32.
  layers: Layers = FLAX            # conv, BatchNorm and max pooling; `models.get_model` chooses them.
  batch_axis: str | None = None    # the device axis of the batch in training (see the module docstring).

  def conv(self, **defaults):
    """A factory of this model's convolutions (`self.layers.conv`): in `dtype`, with float32 parameters."""
    return functools.partial(self.layers.conv, dtype=self.dtype, param_dtype=jnp.float32, **defaults)

  def norm(self, train: bool, **defaults):
    """A factory of this model's BatchNorms (`self.layers.batch_norm`, momentum 0.9): batch statistics when
    training, the running ones otherwise and whenever `freeze_batch_norm`."""
    return functools.partial(self.layers.batch_norm, use_running_average=not train or self.freeze_batch_norm,
                             axis_name=self.batch_axis, momentum=0.9, dtype=self.dtype, param_dtype=jnp.float32,
                             **defaults)

  def dropout(self, rate: float, train: bool) -> nn.Module:
    """Dropout whose masks are drawn for the global batch (`batch_axis`)."""
    return Dropout(rate, deterministic=not train, axis_name=self.batch_axis)

  def classify(self, features, train: bool):
    """The model's output from its pooled `features`: float32 features if `features_only`, else the logits of
    the head (models/head.py), whose parameters are params['head']."""
    if self.features_only:
      return features.astype(jnp.float32)
    head = Head(self.num_classes, self.hidden, self.dropout_rate, self.dtype, self.batch_axis, name=HEAD)
    return head(features, train)
