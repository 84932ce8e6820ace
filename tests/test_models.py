"""Model registry, output shapes and dtypes, the shared head, and parameter counts against Keras and torchvision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pneumojax import models
from pneumojax.models.head import Head

ALL_MODELS = ('densenet121', 'efficientnet_lite0', 'inception_v3', 'jain_model1', 'jain_model2', 'mobilenet_v2',
              'resnet101', 'resnet18', 'resnet34', 'resnet50', 'simple_cnn', 'vgg16', 'vgg19')
BACKBONES = ('densenet121', 'efficientnet_lite0', 'inception_v3', 'mobilenet_v2', 'resnet18', 'vgg16')


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
  size = 75 if name == 'inception_v3' else 32  # Inception's smallest input.
  model = models.get_model(name, num_classes=3)
  variables = _init_shapes(model, (2, size, size, channels))
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)},
                                                   mutable=['batch_stats'])[0],
                          variables, jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32))
  assert (logits.shape, logits.dtype) == ((2, 3), jnp.float32)


@pytest.mark.parametrize('name, width', [('densenet121', 1024), ('efficientnet_lite0', 1280), ('inception_v3', 2048),
                                         ('mobilenet_v2', 1280), ('resnet18', 512), ('resnet50', 2048),
                                         ('vgg16', 512)])
def test_features_only_returns_the_pooled_backbone_without_a_head(name, width):
  size = 75 if name == 'inception_v3' else 32
  model = models.get_model(name, features_only=True, dtype='bfloat16')
  variables = _init_shapes(model, (1, size, size, 3))
  assert 'head' not in variables['params']
  features = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, size, size, 3)), train=False), variables)
  assert (features.shape, features.dtype) == ((2, width), jnp.float32)


@pytest.mark.parametrize('name', BACKBONES)
def test_head_is_configurable(name):
  size = 75 if name == 'inception_v3' else 32
  model = models.get_model(name, num_classes=5, hidden=(64, 32))
  head = _init_shapes(model, (1, size, size, 3))['params']['head']
  assert [head[k]['kernel'].shape[1] for k in ('hidden0', 'hidden1', 'out')] == [64, 32, 5]


def test_head_dropout_is_active_only_in_training():
  head = Head(num_classes=3, hidden=(16,), dropout_rate=0.5)
  features = jax.random.normal(jax.random.key(0), (4, 32))
  variables = head.init(jax.random.key(1), features, train=False)

  def logits(train, seed):
    return head.apply(variables, features, train=train, rngs={'dropout': jax.random.key(seed)})

  assert not np.allclose(logits(True, 0), logits(True, 1))
  np.testing.assert_array_equal(logits(False, 0), logits(False, 1))


def test_frozen_batch_norm_uses_and_keeps_the_running_statistics():
  model = models.get_model('resnet18', small_stem=True, num_filters=8, freeze_batch_norm=True)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))

  @jax.jit
  def outputs():
    variables = model.init({'params': jax.random.key(1, impl='rbg')}, x, train=False)
    # Running statistics far from the batch's, so that normalising with either would differ.
    variables['batch_stats'] = jax.tree.map(lambda s: s + 3.0, variables['batch_stats'])
    train_logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    unfrozen_logits, _ = model.clone(freeze_batch_norm=False).apply(variables, x, train=True,
                                                                    mutable=['batch_stats'])
    return (variables['batch_stats'], updates['batch_stats'], train_logits,
            model.apply(variables, x, train=False), unfrozen_logits)

  stats, updated_stats, train_logits, eval_logits, unfrozen_logits = outputs()
  jax.tree.map(np.testing.assert_array_equal, updated_stats, stats)
  np.testing.assert_allclose(train_logits, eval_logits, rtol=1e-6)
  assert not np.allclose(unfrozen_logits, train_logits)


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
                                            ('resnet50', 25_557_032), ('resnet101', 44_549_160)])
def test_resnet_params_match_torchvision(name, expected):
  model = models.get_model(name, num_classes=1000)
  assert _num_params(_init_shapes(model, (1, 224, 224, 3))) == expected


@pytest.mark.parametrize('name, kwargs, expected', [
    # Keras's trainable parameters (model.summary()) with the ImageNet top.
    ('vgg16', {'pooling': 'flatten', 'hidden': (4096, 4096)}, 138_357_544),
    ('vgg19', {'pooling': 'flatten', 'hidden': (4096, 4096)}, 143_667_240),
    ('resnet50', {'variant': 'keras'}, 25_583_592),
    ('inception_v3', {}, 23_817_352),
    ('densenet121', {}, 7_978_856),
    ('mobilenet_v2', {}, 3_504_872),
    ('mobilenet_v2', {'alpha': 1.4}, 6_108_776),
    ('efficientnet_lite0', {}, 4_652_008),  # efficientnet-lite-pytorch's count.
])
def test_params_match_the_reference_implementations(name, kwargs, expected):
  model = models.get_model(name, num_classes=1000, **kwargs)
  size = 299 if name == 'inception_v3' else 224
  assert _num_params(_init_shapes(model, (1, size, size, 3))) == expected


def test_keras_resnet_variant_puts_the_stride_in_the_first_1x1_convolution():
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  for variant, strided in [('torchvision', 'conv2'), ('keras', 'conv1')]:
    model = models.get_model('resnet50', variant=variant)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=True, mutable=['intermediates']),
        _init_shapes(model, x.shape), x)
    block = state['intermediates']['layer2_0']
    assert block[strided]['__call__'][0].shape[1] == 8  # 16 -> 8: this convolution strides.


def test_resnet_small_stem_keeps_resolution():
  """The small stem downsamples 4x less, so the last feature map of a 32 px input is 4x4, not 1x1."""
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  for small_stem, size in [(False, 1), (True, 4)]:
    model = models.get_model('resnet18', small_stem=small_stem)
    variables = _init_shapes(model, x.shape)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=True, mutable=['intermediates']),
        variables, x)
    last_block = state['intermediates']['layer4_1']['__call__'][0]
    assert last_block.shape == (1, size, size, 512)


def test_efficientnet_feature_blocks_concatenate_pooled_block_outputs():
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  single = models.get_model('efficientnet_lite0', features_only=True)
  variables = single.init(jax.random.key(1), x, train=False)
  several = models.get_model('efficientnet_lite0', features_only=True, feature_blocks=[16, 5])  # a list, from JSON
  features, state = several.apply(variables, x, train=False, capture_intermediates=True)
  block5 = state['intermediates']['blocks_5']['__call__'][0]
  assert features.shape == (2, 80 + 1280)  # block 5 (80 channels) first: the blocks in network order
  np.testing.assert_allclose(features[:, :80], block5.mean(axis=(1, 2)), rtol=1e-6)
  np.testing.assert_allclose(features[:, 80:], single.apply(variables, x, train=False), rtol=1e-6)
  with pytest.raises(ValueError, match=r'feature_blocks=\(17,\).*0-15.*16 \(conv_head\)'):
    models.get_model('efficientnet_lite0', feature_blocks=(17,)).init(jax.random.key(1), x, train=False)
