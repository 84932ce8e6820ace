"""The per-device train and eval steps, run on one device (parallel equivalence is in test_parallel.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from pneumojax import models
from pneumojax.train import step
from pneumojax.train.state import create_train_state

# rbg keys: threefry's parameter initialisation takes seconds to compile on CPU.
KEY = jax.random.key(0, impl='rbg')


def _on_one_device(fn):
  """The steps use collectives over 'batch', so they need a named axis: a one-device shard_map gives one."""
  mesh = Mesh(jax.devices()[:1], ('batch',))
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=P(), out_specs=P(), check_vma=False))


def _state(tx=optax.sgd(1.0), **model_kwargs):
  model = models.get_model('simple_cnn', widths=(4, 8), **model_kwargs)
  return create_train_state(model, tx, KEY, (32, 32, 1))


def _batch(size, seed=0, num_padding=0):
  """Noise whose mean gives away the label, so that a few steps can learn it."""
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 2, size).astype(np.int32)
  image = rng.normal(size=(size, 32, 32, 1)) + label[:, None, None, None]
  mask = np.ones(size, np.float32)
  mask[size - num_padding:] = 0
  return {'image': image.astype(np.float32), 'label': label, 'mask': mask}


def _tree_allclose(a, b, **kwargs):
  jax.tree.map(functools.partial(np.testing.assert_allclose, **kwargs), a, b)


def test_training_on_a_fixed_batch_reduces_the_loss():
  state = _state(optax.adam(3e-2), dropout_rate=0.0)
  initial_stats = state.batch_stats
  batch = _batch(16)
  train_step = _on_one_device(step.train_step)
  losses = []
  for _ in range(8):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 8
  # The BatchNorm running statistics moved towards the batch statistics.
  mean = state.batch_stats['BatchNorm_0']['mean']
  assert not np.allclose(mean, initial_stats['BatchNorm_0']['mean'])


def test_padding_examples_change_neither_loss_nor_gradients():
  # No BatchNorm: in train mode its batch statistics would see the padding.
  state = _state(use_bn=False, dropout_rate=0.0)
  real = _batch(6)
  padded = jax.tree.map(lambda r, g: np.concatenate([r, g]), real, _batch(3, seed=1))
  padded['mask'][6:] = 0
  padded['image'][6:] *= 100  # garbage that would dominate the loss if it counted.
  train_step = _on_one_device(step.train_step)
  state_real, metrics_real = train_step(state, real)
  state_padded, metrics_padded = train_step(state, padded)
  _tree_allclose(metrics_padded, metrics_real, rtol=1e-5)
  # SGD with rate 1: equal parameters mean equal gradients.
  _tree_allclose(state_padded.params, state_real.params, rtol=1e-5, atol=1e-7)
  # The same examples unmasked do change the loss, so the comparison above is not vacuous.
  padded['mask'][:] = 1
  assert not np.isclose(train_step(state, padded)[1]['loss'], metrics_real['loss'])


def test_class_weighted_loss_and_gradients_match_a_hand_computation():
  state = _state(use_bn=False, dropout_rate=0.0)
  batch = _batch(8, num_padding=2)
  class_weights = np.array([0.25, 3.0], np.float32)

  def hand_loss(params):
    logits = state.apply_fn({'params': params}, batch['image'], train=False)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch['label'][:, None], axis=1)[:, 0]
    w = class_weights[batch['label']] * batch['mask']
    return jnp.sum(w * ce) / jnp.sum(w)

  train_step = _on_one_device(functools.partial(step.train_step, class_weights=class_weights))
  new_state, metrics = train_step(state, batch)
  np.testing.assert_allclose(metrics['loss'], hand_loss(state.params), rtol=1e-5)
  expected_params = jax.tree.map(lambda p, g: p - g, state.params, jax.grad(hand_loss)(state.params))
  _tree_allclose(new_state.params, expected_params, rtol=1e-4, atol=1e-6)
  unweighted = _on_one_device(step.train_step)(state, batch)[1]['loss']
  assert not np.isclose(unweighted, metrics['loss'])


def test_dropout_is_deterministic_per_step_and_differs_between_steps():
  state = _state(use_bn=False, dropout_rate=0.5)
  batch = _batch(8)
  train_step = _on_one_device(step.train_step)
  loss = train_step(state, batch)[1]['loss']
  assert train_step(state, batch)[1]['loss'] == loss
  assert train_step(state.replace(step=1), batch)[1]['loss'] != loss


def test_eval_step_returns_per_example_outputs_from_running_statistics():
  state = _state()
  batch = _batch(8, num_padding=3)
  eval_step = _on_one_device(step.eval_step)
  out = eval_step(state, batch)
  assert out['probs'].shape == (8, 2) and out['probs'].dtype == jnp.float32
  np.testing.assert_allclose(out['probs'].sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(out['loss'], -np.log(out['probs'][np.arange(8), batch['label']]), rtol=1e-5)
  np.testing.assert_array_equal(out['label'], batch['label'])
  np.testing.assert_array_equal(out['mask'], batch['mask'])
  # Running statistics, not batch statistics: an example's output does not depend on its batch.
  alone = eval_step(state, jax.tree.map(lambda x: x[:1], batch))
  np.testing.assert_allclose(alone['probs'][0], out['probs'][0], rtol=1e-5)


def test_balanced_class_weights():
  weights = step.class_weights_from_counts([3, 1])
  np.testing.assert_allclose(weights, [4 / 6, 4 / 2])
  np.testing.assert_allclose(weights * [3, 1], [2, 2])  # every class carries the same total weight.
  with pytest.raises(ValueError, match='at least one example'):
    step.class_weights_from_counts([5, 0])
