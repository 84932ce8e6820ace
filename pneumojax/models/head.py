"""The classifier head of the pretrained-backbone families (`Classifier.classify`): pooled features -> logits.

Its parameters live under the module name `head`, which is how the optimizer tells the head from the backbone
(frozen or lower-rate backbone, `pneumojax.train.optim`) and how pretrained weights leave the head fresh.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models.layers import Dropout

HEAD = 'head'


class Head(nn.Module):
  """[dropout -> dense -> relu] per `hidden` width, then dropout -> dense to float32 logits."""
  num_classes: int
  hidden: Sequence[int] = ()
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  batch_axis: str | None = None  # the device axis of the batch in training: dropout masks of the global batch.

  @nn.compact
  def __call__(self, x, train: bool):
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32)
    dropout = functools.partial(Dropout, self.dropout_rate, deterministic=not train, axis_name=self.batch_axis)
    for i, width in enumerate(self.hidden):
      x = dropout()(x)
      x = nn.relu(dense(width, name=f'hidden{i}')(x))
    x = dropout()(x)
    return dense(self.num_classes, name='out')(x).astype(jnp.float32)
