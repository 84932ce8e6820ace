"""Model registry, output shapes and dtypes, and ResNet parameter counts against torchvision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pneumojax import models

ALL_MODELS = ('jain_model1', 'jain_model2', 'resnet18', 'resnet34', 'resnet50', 'simple_cnn')


def _init_shapes(model, shape):
  """Variables of `model` as shapes only: nothing is computed."""
  return jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, jnp.zeros(shape), train=False))


def _num_params(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables['params']))


def test_registry_lists_every_model():
  assert models.list_models() == sorted(ALL_MODELS)


def test_unknown_model_names_the_known_ones():
  with pytest.raises(ValueError, match='resnet18.*simple_cnn'):
    models.get_model('resnet19')


def test_kwargs_reach_the_module():
  model = models.get_model('resnet18', num_classes=7, small_stem=True, dtype='bfloat16')
  assert (model.num_classes, model.small_stem, model.dtype) == (7, True, jnp.bfloat16)


@pytest.mark.parametrize('name', ALL_MODELS)
@pytest.mark.parametrize('channels', [1, 3])
def test_output_shape(name, channels):
  model = models.get_model(name, num_classes=3)
  variables = _init_shapes(model, (2, 32, 32, channels))
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)},
                                                   mutable=['batch_stats'])[0],
                          variables, jax.ShapeDtypeStruct((2, 32, 32, channels), jnp.float32))
  assert (logits.shape, logits.dtype) == ((2, 3), jnp.float32)


@pytest.mark.parametrize('name, kwargs', [('simple_cnn', {'widths': (8, 16)}),
                                          ('resnet18', {'small_stem': True, 'num_filters': 8})])
def test_bfloat16_compute_keeps_float32_params_and_output(name, kwargs):
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))

  def init_and_apply(dtype):
    model = models.get_model(name, num_classes=2, dtype=dtype, **kwargs)
    # An rbg key: threefry's parameter initialisation takes seconds to compile on CPU.
    variables = model.init({'params': jax.random.key(1, impl='rbg')}, x, train=False)
    logits, _ = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)}, mutable=['batch_stats'])
    return variables, logits

  variables, logits = jax.jit(init_and_apply, static_argnums=0)('bfloat16')
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  # The layers really computed in bfloat16: the logits differ from float32 ones, but not by much.
  _, logits32 = jax.jit(init_and_apply, static_argnums=0)('float32')
  assert not np.array_equal(logits, logits32)
  np.testing.assert_allclose(logits, logits32, atol=0.1, rtol=0.1)


@pytest.mark.parametrize('name, expected', [('resnet18', 11_689_512), ('resnet34', 21_797_672),
                                            ('resnet50', 25_557_032)])
def test_resnet_params_match_torchvision(name, expected):
  model = models.get_model(name, num_classes=1000)
  assert _num_params(_init_shapes(model, (1, 224, 224, 3))) == expected


def test_resnet_small_stem_keeps_resolution():
  """The small stem downsamples 4x less, so the last feature map of a 32 px input is 4x4, not 1x1."""
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  for small_stem, size in [(False, 1), (True, 4)]:
    model = models.get_model('resnet18', small_stem=small_stem)
    variables = _init_shapes(model, x.shape)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=True, mutable=['intermediates']),
        variables, x)
    last_block = state['intermediates']['ResNetBlock_7']['__call__'][0]
    assert last_block.shape == (1, size, size, 512)
