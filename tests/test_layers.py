"""pneumojax.models.layers against flax.linen: the same variables, outputs, gradients and running statistics, and
models built with either."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pneumojax import models
from pneumojax.models import layers


def _input(shape, seed=0):
  # Continuous values: no ties in a pooling window, where the two gradients may legitimately differ.
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _apply(module, variables, x, mutable):
  return module.apply(variables, x, mutable=mutable)[0] if mutable else module.apply(variables, x)


def _assert_same(ours, theirs, x, mutable=False):
  """Same variables from init, same outputs, same gradients of a random projection w.r.t. inputs and params."""
  v_ours, v_theirs = ours.init(jax.random.key(1), x), theirs.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_theirs)
  np.testing.assert_allclose(_apply(ours, v_theirs, x, mutable), _apply(theirs, v_theirs, x, mutable),
                             rtol=1e-5, atol=1e-5)

  def loss(module, params, x):
    out = _apply(module, {**v_theirs, 'params': params}, x, mutable)
    return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape)))

  grads = [jax.grad(loss, argnums=(1, 2))(m, v_theirs.get('params', {}), x) for m in (ours, theirs)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), *grads)


class Pool(nn.Module):
  pool: object
  window: tuple
  strides: tuple
  padding: object

  def __call__(self, x):
    return self.pool(x, self.window, self.strides, self.padding)


@pytest.mark.parametrize('window, strides, padding', [
    ((2, 2), (2, 2), 'VALID'), ((3, 3), (2, 2), 'SAME'), ((3, 3), (1, 1), ((1, 1), (1, 1))), ((2, 2), (2, 2), 'SAME')])
def test_max_pool_matches_flax(window, strides, padding):
  x = _input((2, 9, 7, 3))
  ours, theirs = Pool(layers.max_pool, window, strides, padding), Pool(nn.max_pool, window, strides, padding)
  _assert_same(ours, theirs, x)


def test_max_pool_gradient_of_ties():
  # Ties are common (relu zeros, saturated pixels). Non-overlapping windows: the first maximum takes the
  # gradient, exactly as flax's; overlapping windows share it among the tied inputs. Neither loses or copies it.
  x = jnp.asarray(np.random.default_rng(0).integers(0, 3, (2, 7, 6, 3)), jnp.float32)
  for window, strides in (((2, 2), (2, 2)), ((3, 3), (2, 2))):
    weights = jnp.arange(1.0, 1 + nn.max_pool(x, window, strides).size).reshape(nn.max_pool(x, window, strides).shape)
    ours, theirs = (jax.grad(lambda x, pool=pool: jnp.sum(pool(x, window, strides) * weights))(x)
                    for pool in (layers.max_pool, nn.max_pool))
    assert ours.sum() == pytest.approx(float(weights.sum()))
    if window == strides:
      np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize('shape, affine', [((8, 5, 5, 6), {}), ((16, 3), {}),
                                          ((8, 4, 4, 5), {'use_scale': False}), ((8, 4, 4, 5), {'use_bias': False})])
def test_batch_norm_train_mode_matches_flax(shape, affine):
  x = _input(shape) * 3 + 1
  kwargs = dict(use_running_average=False, momentum=0.9, epsilon=1e-3, **affine)
  ours, theirs = layers.BatchNorm(**kwargs), nn.BatchNorm(**kwargs)
  _assert_same(ours, theirs, x, mutable=['batch_stats'])
  variables = theirs.init(jax.random.key(0), x)
  (_, ours_stats), (_, theirs_stats) = (m.apply(variables, x, mutable=['batch_stats']) for m in (ours, theirs))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours_stats, theirs_stats)


def test_batch_norm_inference_uses_running_statistics():
  x = _input((4, 3, 3, 2))
  variables = nn.BatchNorm(use_running_average=True).init(jax.random.key(0), x)
  variables['batch_stats'] = {'mean': jnp.array([0.5, -1.0]), 'var': jnp.array([4.0, 0.25])}
  np.testing.assert_allclose(layers.BatchNorm(use_running_average=True).apply(variables, x),
                             nn.BatchNorm(use_running_average=True).apply(variables, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kernel, strides, padding, use_bias', [
    ((3, 3), 1, 'SAME', False), ((3, 3), 2, 'SAME', True), ((5, 5), 2, 'SAME', False), ((3, 3), 1, 'VALID', True),
    ((3, 5), (2, 1), ((1, 1), (2, 2)), False)])
def test_depthwise_conv_matches_flax(kernel, strides, padding, use_bias):
  x = _input((2, 9, 8, 4))  # unequal sides: unequal SAME paddings
  kwargs = dict(features=4, kernel_size=kernel, strides=strides, padding=padding, feature_group_count=4,
                use_bias=use_bias)
  _assert_same(layers.Conv(**kwargs), nn.Conv(**kwargs), x)


def test_ordinary_conv_is_flax_conv():
  x = _input((2, 6, 6, 3))
  kwargs = dict(features=5, kernel_size=(3, 3), strides=2, padding='SAME')
  _assert_same(layers.Conv(**kwargs), nn.Conv(**kwargs), x)


def test_auto_chooses_the_xla_cpu_layers_on_the_cpu_backend():
  assert jax.default_backend() == 'cpu'
  assert models.get_model('resnet18').layers == layers.XLA_CPU
  assert models.get_model('resnet18', layers='flax').layers == layers.FLAX
  with pytest.raises(ValueError, match="model.layers must be one of"):
    models.get_model('resnet18', layers='fast')


@pytest.mark.parametrize('name, kwargs', [('simple_cnn', {'widths': (4, 8), 'dropout_rate': 0.0}),
                                          ('resnet18', {'num_filters': 4, 'small_stem': True})])
def test_a_model_computes_the_same_with_either_layers(name, kwargs):
  x = _input((2, 16, 16, 1))
  flax_model, cpu_model = (models.get_model(name, layers=which, **kwargs) for which in ('flax', 'xla_cpu'))

  @jax.jit
  def train_outputs(variables):
    return [model.apply(variables, x, train=True, mutable=['batch_stats']) for model in (flax_model, cpu_model)]

  variables = jax.jit(lambda: flax_model.init(jax.random.key(0, impl='rbg'), x, train=False))()
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, cpu_model.init(jax.random.key(0), x,
                                                                                      train=False))
  (flax_logits, flax_stats), (cpu_logits, cpu_stats) = train_outputs(variables)
  np.testing.assert_allclose(cpu_logits, flax_logits, rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), cpu_stats, flax_stats)
