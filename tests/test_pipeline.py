"""The tf.data pipelines: every eval example once, seeded and resumable train streams, oversampling."""

import numpy as np
import pytest

from pneumojax.data import pipeline, splits
from tests.helpers import data_config


@pytest.mark.parametrize('num_processes', [1, 2])
def test_eval_yields_every_example_once(builder64, tfds_dir, num_processes):
  cfg = data_config(tfds_dir, augment=False)
  expected = splits.split_metadata(builder64, 'test', cfg)['label']
  per_process = [list(pipeline.eval_dataset(builder64, cfg, 'test', 256, p, num_processes)[0].as_numpy_iterator())
                 for p in range(num_processes)]
  labels, masks = [], []
  for batches in zip(*per_process):  # reassemble global batches in process order
    labels.append(np.concatenate([b['label'] for b in batches]))
    masks.append(np.concatenate([b['mask'] for b in batches]))
  labels, masks = np.concatenate(labels), np.concatenate(masks)
  assert len(labels) == 768 and masks.sum() == 624 and masks[:624].all()
  np.testing.assert_array_equal(labels[:624], expected)


def test_train_batches(builder64, tfds_dir):
  cfg = data_config(tfds_dir, image_size=48, channels=3)
  batch = next(pipeline.train_dataset(builder64, cfg, 32, seed=0).as_numpy_iterator())
  assert batch['image'].shape == (32, 48, 48, 3) and batch['image'].dtype == np.float32
  assert -1.0 <= batch['image'].min() < -0.5 and 0.5 < batch['image'].max() <= 1.0
  assert batch['label'].dtype == np.int32 and set(batch['label']) <= {0, 1}
  np.testing.assert_array_equal(batch['mask'], 1.0)


def _batches(builder, cfg, seed, start, count, process_index=0, process_count=1):
  ds = pipeline.train_dataset(builder, cfg, 16, seed, start, process_index, process_count)
  return list(ds.take(count).as_numpy_iterator())


def test_train_stream_is_seeded_resumable_and_process_independent(builder64, tfds_dir):
  cfg = data_config(tfds_dir)
  run = _batches(builder64, cfg, seed=0, start=0, count=6)
  assert all(np.array_equal(a['image'], b['image']) for a, b in zip(run, _batches(builder64, cfg, 0, 0, 6)))
  assert not np.array_equal(run[0]['image'], _batches(builder64, cfg, 1, 0, 1)[0]['image'])
  resumed = _batches(builder64, cfg, seed=0, start=4, count=2)
  for a, b in zip(run[4:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
  halves = [_batches(builder64, cfg, 0, 0, 2, p, 2) for p in range(2)]
  for step in range(2):
    np.testing.assert_array_equal(np.concatenate([h[step]['image'] for h in halves]), run[step]['image'])


def test_each_epoch_has_a_new_order(builder64, tfds_dir):
  cfg = data_config(tfds_dir, val_fraction=0.9, augment=False)  # train_pd: ~520 images, 32 batches of 16
  n = pipeline.split_info(builder64, 'train_pd', cfg).num_examples
  labels = np.concatenate([b['label'] for b in _batches(builder64, cfg, 0, 0, 2 * n // 16)])
  first, second = labels[:n], labels[n:2 * n]
  assert np.bincount(first, minlength=2).tolist() == list(pipeline.split_info(builder64, 'train_pd', cfg).class_counts)
  assert not np.array_equal(first, second)


def test_oversampling_balances_classes(builder64, tfds_dir):
  cfg = data_config(tfds_dir, class_balance='oversample', augment=False)
  labels = np.concatenate([b['label'] for b in _batches(builder64, cfg, 0, 0, 40)])
  assert 0.42 < labels.mean() < 0.58  # ~0.74 pneumonia without oversampling
