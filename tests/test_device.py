"""The device path of the data (data/device.py): batch order and augmentation as pure functions of (seed, step),
every example once per epoch, oversampling, evaluation on the devices equal to the tf.data path, and training runs
on either path that resume to the same parameters."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pneumojax import train
from pneumojax.config import default_config
from pneumojax.data import device, pipeline, prepare
from pneumojax.train import evaluator, parallel, run
from pneumojax.trained.load import load_run
from tests.helpers import final_state, tiny_config


def _indices(step, labels, batch_size=8, class_balance='none', seed=0):
  counts = np.bincount(labels, minlength=2)
  return np.asarray(device.batch_indices(jax.random.key(seed), step, jnp.asarray(labels), batch_size, class_balance,
                                         tuple(counts.tolist())))


@pytest.mark.smoke
def test_every_example_once_per_epoch_and_a_new_order_each_epoch():
  labels = np.arange(43) % 2
  steps_per_epoch = 43 // 8
  epoch0 = np.concatenate([_indices(s, labels) for s in range(steps_per_epoch)])
  epoch1 = np.concatenate([_indices(s, labels) for s in range(steps_per_epoch, 2 * steps_per_epoch)])
  assert len(set(epoch0.tolist())) == len(epoch0) == steps_per_epoch * 8  # no example twice in an epoch
  assert len(set(epoch1.tolist())) == len(epoch1)
  assert not np.array_equal(epoch0, epoch1)
  np.testing.assert_array_equal(_indices(7, labels), _indices(7, labels))  # a pure function of (seed, step)
  assert not np.array_equal(_indices(7, labels, seed=1), _indices(7, labels))


@pytest.mark.smoke
def test_oversampling_draws_the_classes_equally():
  labels = np.array([0] * 10 + [1] * 90)
  drawn = np.concatenate([_indices(s, labels, batch_size=50, class_balance='oversample') for s in range(40)])
  assert abs(np.mean(labels[drawn]) - 0.5) < 0.05
  assert len(set(drawn[labels[drawn] == 0].tolist())) == 10  # every minority example is drawn


def _train_batch_fn(config, batch_size=4):
  make = functools.partial(device.train_batch, seed=3, batch_size=batch_size, data_config=config, class_counts=(10, 10),
                           axis_name=parallel.AXIS)
  replicated, split = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(parallel.AXIS)
  return jax.jit(jax.shard_map(make, mesh=jax.sharding.Mesh(jax.devices()[:1], (parallel.AXIS,)),
                               in_specs=(replicated, replicated), out_specs=split, check_vma=False))


@pytest.mark.smoke
def test_train_batches_are_gathered_augmented_normalised_and_reproducible():
  config = default_config().data
  config.resolution = 16
  rng = np.random.default_rng(0)
  arrays = {'image': rng.integers(0, 256, (20, 16, 16, 1), dtype=np.uint8), 'label': np.arange(20, dtype=np.int32) % 2,
            'mask': np.ones(20, np.float32)}
  batch = _train_batch_fn(config)
  first, again, other = batch(arrays, 5), batch(arrays, 5), batch(arrays, 6)
  np.testing.assert_array_equal(first['image'], again['image'])
  assert not np.array_equal(first['image'], other['image'])
  assert first['image'].shape == (4, 16, 16, 1) and -1.0 <= first['image'].min() and first['image'].max() <= 1.0
  # Without augmentation every image is a stored one, normalised to [-1, 1], with its own label.
  config.augment = False
  plain = _train_batch_fn(config)(arrays, 5)
  stored = arrays['image'].astype(np.float32) / 127.5 - 1.0
  rows = [int(np.flatnonzero((np.abs(stored - image) < 1e-6).all(axis=(1, 2, 3)))[0]) for image in plain['image']]
  assert len(set(rows)) == 4
  np.testing.assert_array_equal(plain['label'], arrays['label'][rows])


def test_evaluation_on_the_devices_equals_the_tf_data_path(trained_run):
  config, workdir, _ = trained_run
  builder = prepare.get_builder(config.data)
  loaded = load_run(workdir)
  dp = parallel.DataParallel(config.train.parallel, make_eval_batch=functools.partial(
      device.eval_batch, data_config=config.data), eval_chunk=config.train.eval_batch_size // jax.device_count())
  state = dp.replicate(loaded.state)
  on_devices = run.eval_data(builder, config, dp, 'val_pd')()
  assert isinstance(on_devices, parallel.DeviceSplit)
  from_devices = evaluator.outputs(dp, state, on_devices).outputs.compute()
  from_host = evaluator.outputs(dp, state, run.eval_batches(builder, config, 'val_pd')).outputs.compute()
  np.testing.assert_array_equal(from_devices['label'], from_host['label'])
  np.testing.assert_allclose(from_devices['probs'], from_host['probs'], atol=1e-5)
  assert len(from_devices['label']) == pipeline.split_info(builder, 'val_pd', config.data).num_examples


@pytest.mark.parametrize('device_memory_mb', [0, 1024], ids=['tf.data', 'on devices'])
def test_resume_equals_an_uninterrupted_run_on_either_path(builder64, tfds_dir, tmp_path, device_memory_mb):
  def config(num_steps):
    c = tiny_config(tfds_dir, num_steps)
    c.data.device_memory_mb = device_memory_mb
    return c
  train.train_and_evaluate(config(6), str(tmp_path / 'whole'))
  train.train_and_evaluate(config(3), str(tmp_path / 'resumed'))
  results = train.train_and_evaluate(config(6), str(tmp_path / 'resumed'))
  whole, resumed = final_state(config(6), tmp_path / 'whole'), final_state(config(6), tmp_path / 'resumed')
  for a, b in zip(jax.tree.leaves((whole.params, whole.opt_state)), jax.tree.leaves((resumed.params, resumed.opt_state))):
    np.testing.assert_array_equal(a, b)
  assert results['test']['num_examples'] == 624


def test_several_steps_per_dispatch_train_the_same_steps(builder64, tfds_dir, tmp_path):
  def config(steps_per_dispatch):
    c = tiny_config(tfds_dir, 4)
    c.train.update(dict(steps_per_dispatch=steps_per_dispatch, log_every_steps=4, eval_every_steps=4))
    return c
  for k in (1, 3):
    train.train_and_evaluate(config(k), str(tmp_path / str(k)))
  one, three = final_state(config(1), tmp_path / '1'), final_state(config(3), tmp_path / '3')
  assert int(one.step) == int(three.step) == 4
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(three.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
