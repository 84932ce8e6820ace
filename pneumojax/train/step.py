"""Pure per-device train and eval steps, written once for both wrappers of parallel.py.

Each device holds a shard of the global batch; collectives over `axis_name` make the loss, gradients,
BatchNorm running statistics and metrics those of the global batch, however it is split.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax


def class_weights_from_counts(counts) -> np.ndarray:
  """'Balanced' weights n / (k * n_c), as scikit-learn: every class carries the same total weight."""
  counts = np.asarray(counts, np.float64)
  if np.any(counts <= 0):
    raise ValueError(f'every class needs at least one example to be weighted, got counts {counts.tolist()}')
  return (counts.sum() / (len(counts) * counts)).astype(np.float32)


def _variables(state, params):
  if state.batch_stats:
    return {'params': params, 'batch_stats': state.batch_stats}
  return {'params': params}


def train_step(state, batch, *, class_weights=None, axis_name='batch'):
  """One optimizer step on the global batch; returns (new state, {'loss', 'accuracy'} of the global batch).

  loss = sum_i w_i ce_i / sum_i w_i over the global batch, where w_i = mask_i * class_weights[label_i].
  Padding examples (mask 0) count in neither loss nor accuracy, but in train mode they do enter BatchNorm's
  batch statistics: feed full training batches. Every device passes the model the same dropout key: models built
  with `batch_axis=axis_name` (models/base.py; `run.build_model`) draw their masks for the global batch from it and
  normalise over the global batch, so the step computes the same on any number of devices, up to float rounding.
  """
  labels, mask = batch['label'], batch['mask']
  weights = mask if class_weights is None else mask * jnp.asarray(class_weights, jnp.float32)[labels]
  total_weight = lax.psum(weights.sum(), axis_name)
  # Depends on the step only, so a resumed run draws the same masks.
  dropout_rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    variables = _variables(state, params)
    if 'batch_stats' in variables:
      logits, updates = state.apply_fn(variables, batch['image'], train=True, rngs={'dropout': dropout_rng},
                                       mutable=['batch_stats'])
      batch_stats = updates['batch_stats']
    else:
      logits = state.apply_fn(variables, batch['image'], train=True, rngs={'dropout': dropout_rng})
      batch_stats = state.batch_stats
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    # This device's share of the global loss: the shares' gradients sum to the global gradient.
    return jnp.sum(weights * losses) / total_weight, (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
  grads, loss, correct, count = lax.psum((grads, loss, correct, mask.sum()), axis_name)
  state = state.apply_gradients(grads=grads, batch_stats=lax.pmean(batch_stats, axis_name))
  return state, {'loss': loss, 'accuracy': correct / count}


def eval_step(state, batch):
  """Per-example float32 `probs` [b, num_classes] and cross-entropy `loss` [b]; `label` and `mask` pass through."""
  logits = state.apply_fn(_variables(state, state.params), batch['image'], train=False)
  return {
      'probs': jax.nn.softmax(logits),
      'loss': optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']),
      'label': batch['label'],
      'mask': batch['mask'],
  }
