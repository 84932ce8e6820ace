"""Fine-tuning modes: frozen backbone, head-then-unfreeze, lower backbone learning rate (optim.make_optimizer), and
cached features with a trained softmax (train/linear_probe.py)."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import Mesh, PartitionSpec as P

from pneumojax import models, weights
from pneumojax.config import default_config
from pneumojax.models.head import Head, classify
from pneumojax.train import checkpoint, linear_probe, loop, optim, step
from pneumojax.train.state import create_train_state
from tests.conftest import CHEST_XRAY

KEY = jax.random.key(0, impl='rbg')
BATCH = {'image': np.random.default_rng(0).normal(size=(8, 4, 4, 1)).astype(np.float32),
         'label': np.arange(8, dtype=np.int32) % 2, 'mask': np.ones(8, np.float32)}


class TinyBackbone(nn.Module):
  """One dense layer and the shared head: enough to tell the head's updates from the backbone's."""
  num_classes: int = 2
  hidden: Sequence[int] = ()
  dropout_rate: float = 0.0
  features_only: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    return classify(self, nn.relu(nn.Dense(8, name='dense')(x.reshape(x.shape[0], -1))), train)


def _optim_config(**overrides):
  config = default_config().optim
  config.update({'name': 'sgd', 'momentum': 0.0, 'learning_rate': 0.1, 'schedule': 'constant', **overrides})
  return config


def _train(optim_config, num_steps, steps_per_epoch=2, model=TinyBackbone()):
  """The states before and after each of `num_steps` steps on one batch."""
  tx, _ = optim.make_optimizer(optim_config, steps_per_epoch, total_steps=10)
  state = create_train_state(model, tx, KEY, (4, 4, 1))
  mesh = Mesh(jax.devices()[:1], ('batch',))
  train_step = jax.jit(jax.shard_map(step.train_step, mesh=mesh, in_specs=P(), out_specs=P(), check_vma=False))
  states = [state]
  for _ in range(num_steps):
    state, _ = train_step(state, BATCH)
    states.append(state)
  return states


def _equal(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


@pytest.mark.parametrize('name', optim.OPTIMIZERS)
def test_a_zero_backbone_factor_freezes_the_backbone_and_trains_the_head(name):
  # Weight decay and clipping too, whose masks must fit the partitioned parameters.
  before, after = _train(_optim_config(name=name, backbone_lr_factor=0.0, weight_decay=0.1, grad_clip_norm=1.0), 1)
  assert _equal(after.params['dense'], before.params['dense'])
  assert not np.allclose(after.params['head']['out']['kernel'], before.params['head']['out']['kernel'])


def test_head_then_unfreeze_trains_the_backbone_only_after_the_frozen_epochs():
  states = _train(_optim_config(backbone_frozen_epochs=1.0), num_steps=3, steps_per_epoch=2)
  backbones = [s.params['dense'] for s in states]
  heads = [s.params['head'] for s in states]
  assert _equal(backbones[1], backbones[0]) and _equal(backbones[2], backbones[0])
  assert not _equal(backbones[3], backbones[2])
  assert not any(_equal(heads[i + 1], heads[i]) for i in range(3))


def test_the_backbone_learns_at_its_factor_of_the_learning_rate():
  before, reference = _train(_optim_config(), 1)  # a single optimizer: factor 1
  _, scaled = _train(_optim_config(backbone_lr_factor=0.1), 1)

  def update(state, module):
    return jax.tree.map(np.subtract, state.params[module], before.params[module])

  # atol: the float32 rounding of parameters near 1, which the differences inherit.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 0.1 * b, rtol=1e-4, atol=2e-7),
               update(scaled, 'dense'), update(reference, 'dense'))
  jax.tree.map(np.testing.assert_array_equal, update(scaled, 'head'), update(reference, 'head'))


def test_fine_tuning_modes_need_a_model_with_a_head():
  with pytest.raises(ValueError, match=r"params\['head'\].*Dense_0"):
    _train(_optim_config(backbone_lr_factor=0.0), 0, model=models.get_model('simple_cnn', widths=(4,)))


def test_extract_features_returns_the_backbone_features_of_the_real_examples_only():
  model = TinyBackbone()
  images = np.random.default_rng(1).normal(size=(5, 4, 4, 1)).astype(np.float32)
  padded = {'image': np.concatenate([images, np.zeros((3, 4, 4, 1), np.float32)]),
            'label': np.array([0, 1, 1, 0, 1, 0, 0, 0], np.int32), 'mask': np.array([1] * 5 + [0] * 3, np.float32)}
  dataset = tf.data.Dataset.from_tensor_slices(padded).batch(4)
  variables = model.init(KEY, images, train=False)
  cached = linear_probe.extract_features(model, variables, dataset)
  np.testing.assert_allclose(cached['features'], model.clone(features_only=True).apply(variables, images, train=False),
                             rtol=1e-6)
  np.testing.assert_array_equal(cached['label'], [0, 1, 1, 0, 1])


def test_train_head_learns_separable_features_and_reports_every_epoch():
  rng = np.random.default_rng(0)

  def split(n):
    labels = rng.integers(0, 2, n)
    return {'features': (rng.normal(size=(n, 8)) + 2 * labels[:, None]).astype(np.float32), 'label': labels}

  config = default_config()
  config.optim.update({'learning_rate': 0.05, 'schedule': 'constant'})
  config.train.update({'num_epochs': 3, 'batch_size': 16, 'eval_batch_size': 32})
  head = Head(num_classes=2)
  initial = head.init(KEY, np.zeros((1, 8), np.float32), train=False)['params']
  epochs = list(linear_probe.train_head(config, head, initial, split(160), split(50)))
  assert [epoch for epoch, _, _ in epochs] == [1, 2, 3]
  assert epochs[-1][2]['auc'] > 0.95 and epochs[-1][2]['num_examples'] == 50


def _pretrained_run_config(tfds_dir, tmp_path, **train):
  """A resnet18 (8 filters) on the 64 px data, starting from random "pretrained" variables; returns them too."""
  config = default_config()
  config.data.update({'data_dir': str(tfds_dir), 'manual_dir': str(CHEST_XRAY), 'resolution': 64, 'channels': 3})
  config.model.update({'name': 'resnet18', 'kwargs': {'num_filters': 8}, 'init_from': str(tmp_path / 'pretrained')})
  config.train.update(train)
  backbone = models.get_model('resnet18', num_filters=8, features_only=True)
  pretrained = backbone.init(KEY, np.zeros((1, 64, 64, 3), np.float32), train=False)
  pretrained['batch_stats'] = jax.tree.map(lambda s: s + 0.5, pretrained['batch_stats'])  # Unlike a fresh model's.
  weights.save(tmp_path / 'pretrained', pretrained)
  return config, pretrained


def _assert_best_checkpoint_keeps(config, workdir, pretrained):
  with checkpoint.Checkpointer(workdir) as ckpt:
    template, _ = loop.initial_state(config, 1, 1)
    best = ckpt.restore(ckpt.best_step(), template)
  jax.tree.map(np.testing.assert_array_equal, {k: v for k, v in best.params.items() if k != 'head'},
               pretrained['params'])
  jax.tree.map(np.testing.assert_array_equal, best.batch_stats, pretrained['batch_stats'])


@pytest.mark.slow  # Prepares the 64 px dataset and trains a ResNet.
def test_frozen_backbone_run_starts_from_init_from_and_keeps_it(builder64, tfds_dir, tmp_path):
  config, pretrained = _pretrained_run_config(tfds_dir, tmp_path, num_steps=2, eval_every_steps=2, batch_size=32)
  config.model.freeze_batch_norm = True
  config.optim.backbone_lr_factor = 0.0
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['checkpoint_step'] == 2
  _assert_best_checkpoint_keeps(config, tmp_path / 'run', pretrained)


@pytest.mark.slow  # Prepares the 64 px dataset and runs a backbone over 5.8k images.
def test_cached_features_run_keeps_the_pretrained_backbone_and_reports_test_metrics(builder64, tfds_dir, tmp_path):
  config, pretrained = _pretrained_run_config(tfds_dir, tmp_path, cached_features=True, num_epochs=2,
                                              batch_size=64)
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['test']['num_examples'] == 624 and results['checkpoint_step'] in (1, 2)
  _assert_best_checkpoint_keeps(config, tmp_path / 'run', pretrained)
