"""The optimizer of a run: fine-tuning modes (frozen backbone, head-then-unfreeze, lower backbone learning rate)."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from pneumojax import models
from pneumojax.config import default_config
from pneumojax.train import optim, step
from pneumojax.train.state import create_train_state
from tests.helpers import tiny_backbone

KEY = jax.random.key(0, impl='rbg')
BATCH = {'image': np.random.default_rng(0).normal(size=(8, 4, 4, 1)).astype(np.float32),
         'label': np.arange(8, dtype=np.int32) % 2, 'mask': np.ones(8, np.float32)}


def _optim_config(**overrides):
  config = default_config().optim
  config.update({'name': 'sgd', 'momentum': 0.0, 'learning_rate': 0.1, 'schedule': 'constant', **overrides})
  return config


def _train(optim_config, num_steps, steps_per_epoch=2, model=None):
  """The states before and after each of `num_steps` steps on one batch."""
  tx, _ = optim.make_optimizer(optim_config, steps_per_epoch, total_steps=10)
  state = create_train_state(model or tiny_backbone(), tx, KEY, (4, 4, 1))
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
