"""The linear-probe trainer (train/linear_probe.py): a frozen backbone's cached features and a softmax head trained
on them, evaluated by the same evaluator as every run."""

import json

import jax
import numpy as np
import pytest
import tensorflow as tf

from pneumojax import models, train, weights
from pneumojax.config import default_config
from pneumojax.data import device
from pneumojax.models.head import Head
from pneumojax.train import checkpoint, files, linear_probe, test_history
from tests.helpers import (assert_best_checkpoint_keeps, pretrained_run_config, refuse_to_read_split, tiny_backbone,
                           tiny_config)

KEY = jax.random.key(0, impl='rbg')


def test_extract_features_returns_the_backbone_features_of_the_real_examples_only():
  model = tiny_backbone()
  images = np.random.default_rng(1).normal(size=(5, 4, 4, 1)).astype(np.float32)
  padded = {'image': np.concatenate([images, np.zeros((3, 4, 4, 1), np.float32)]),
            'label': np.array([0, 1, 1, 0, 1, 0, 0, 0], np.int32), 'mask': np.array([1] * 5 + [0] * 3, np.float32)}
  dataset = tf.data.Dataset.from_tensor_slices(padded).batch(4)
  variables = model.init(KEY, images, train=False)
  cached = linear_probe.extract_features(model, variables, dataset)
  np.testing.assert_allclose(cached['features'], model.clone(features_only=True).apply(variables, images, train=False),
                             rtol=1e-6)
  np.testing.assert_array_equal(cached['label'], [0, 1, 1, 0, 1])


def _identity_augmentation(config):
  config.data.update({'crop_scale_min': 1.0, 'crop_max_aspect': 1.0, 'rotation_degrees': 0.0, 'brightness': 0.0,
                      'contrast': 0.0})
  return config


def test_augmented_views_are_drawn_per_view_and_seed_and_an_identity_view_is_the_plain_image():
  config = default_config()
  config.data.update({'resolution': 8, 'channels': 3, 'normalize': 'imagenet'})
  model = tiny_backbone()
  images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), np.uint8)
  split = device.Split('train', np.concatenate([images, np.zeros((1, 8, 8, 1), np.uint8)]),
                       np.array([0, 1, 1, 0, 1, 0], np.int32), np.array([1] * 5 + [0], np.float32))
  variables = model.init(KEY, np.zeros((1, 8, 8, 3), np.float32), train=False)
  views = linear_probe.augmented_views(model, variables, split, config.data, 3, seed=0, batch_size=2)
  assert views['features'].shape[0] == 15 and views['label'].tolist() == [0, 1, 1, 0, 1] * 3  # padding dropped
  first, second, third = np.split(views['features'], 3)
  assert not np.allclose(first, second) and not np.allclose(second, third)
  again = linear_probe.augmented_views(model, variables, split, config.data, 3, seed=0, batch_size=2)
  np.testing.assert_array_equal(again['features'], views['features'])
  assert not np.allclose(linear_probe.augmented_views(model, variables, split, config.data, 1, seed=1,
                                                      batch_size=2)['features'], first)
  # Without augmentation a view is the plain image, normalised as the eval pipeline feeds it.
  plain = linear_probe.augmented_views(model, variables, split, _identity_augmentation(config).data, 1, 0, 2)
  expected = model.clone(features_only=True).apply(
      variables, device.eval_batch({'image': images}, config.data)['image'], train=False)
  np.testing.assert_allclose(plain['features'], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('hidden', [(), (4,)])
def test_a_head_trained_on_standardized_features_folds_into_one_for_raw_features(hidden):
  rng = np.random.default_rng(0)
  raw = (rng.normal(size=(50, 6)) * [1, 10, 100, 0.1, 1, 1] + [0, 5, -50, 1, 2, 3]).astype(np.float32)
  raw[:, 4] = 7.0  # a constant feature: sd 0
  mean, sd = linear_probe.standardizer(raw)
  head = Head(num_classes=2, hidden=hidden)
  params = head.init(KEY, np.zeros((1, 6), np.float32), train=False)['params']
  folded = linear_probe.fold_standardizer(params, mean, sd)
  np.testing.assert_allclose(head.apply({'params': folded}, raw, train=False),
                             head.apply({'params': params}, (raw - mean) / sd, train=False), rtol=1e-4, atol=1e-4)
  assert sd[4] == 1.0 and np.allclose(((raw - mean) / sd).std(axis=0)[[0, 1, 2, 3, 5]], 1.0, atol=1e-5)


def _separable_features(rng, n, shift):
  labels = rng.integers(0, 2, n)
  return {'features': (rng.normal(size=(n, 8)) + shift * labels[:, None]).astype(np.float32), 'label': labels}


def test_train_head_learns_separable_features_and_reports_every_epoch():
  rng = np.random.default_rng(0)
  config = default_config()
  config.optim.update({'learning_rate': 0.05, 'schedule': 'constant'})
  config.train.update({'num_epochs': 3, 'batch_size': 16, 'eval_batch_size': 32})
  head = Head(num_classes=2)
  initial = head.init(KEY, np.zeros((1, 8), np.float32), train=False)['params']
  epochs = list(linear_probe.train_head(config, head, initial, _separable_features(rng, 160, 2),
                                        _separable_features(rng, 50, 2)))
  assert [epoch for epoch, _, _ in epochs] == [1, 2, 3]
  assert epochs[-1][2]['auc'] > 0.95 and epochs[-1][2]['num_examples'] == 50


def test_train_head_evaluates_the_test_features_after_every_epoch():
  rng = np.random.default_rng(0)

  def split(n):  # separable features: the label shifts the first coordinate
    labels = rng.integers(0, 2, n)
    return {'features': (rng.normal(size=(n, 8)) + 3 * labels[:, None] * np.eye(8)[0]).astype(np.float32),
            'label': labels}
  config = default_config()
  config.train.update({'num_epochs': 3, 'batch_size': 32, 'eval_batch_size': 64})
  config.optim.update({'learning_rate': 0.1, 'schedule': 'constant'})
  head = Head(num_classes=2)
  initial = head.init(jax.random.key(0), np.zeros((1, 8), np.float32), train=False)['params']
  epochs = list(linear_probe.train_head(config, head, initial, split(160), split(50), test=split(70)))
  assert [epoch for epoch, _, _ in epochs] == [1, 2, 3]
  for _, _, val_results in epochs:
    assert val_results['num_examples'] == 50 and val_results['test']['num_examples'] == 70
  assert epochs[-1][2]['test']['auc'] > 0.9


@pytest.mark.slow  # Prepares the 64 px dataset and runs a backbone over 5.8k images.
def test_cached_features_run_keeps_the_pretrained_backbone_and_reports_test_metrics(builder64, tfds_dir, tmp_path):
  config, pretrained = pretrained_run_config(tfds_dir, tmp_path, cached_features=True, num_epochs=2, batch_size=64)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['test']['num_examples'] == 624 and results['checkpoint_step'] in (1, 2)
  assert_best_checkpoint_keeps(tmp_path / 'run', pretrained)


def _resnet_probe(tfds_dir, tmp_path, monkeypatch, size: int):
  """A cached-features config of a 4-filter ResNet-18 whose "pretrained" weights are saved in tmp_path, and the list
  to which each backbone pass appends its number of examples: the pass is real, over each split's first batch only."""
  extracted, extract = [], linear_probe.extract_features

  def features_of_a_subset(model, variables, dataset):
    features = extract(model, variables, dataset.take(1))
    extracted.append(len(features['label']))
    return features
  monkeypatch.setattr(linear_probe, 'extract_features', features_of_a_subset)
  config = tiny_config(tfds_dir, -1)
  config.data.update({'channels': 3, 'image_size': size})
  config.model.update({'name': 'resnet18', 'init_from': str(tmp_path / 'pretrained')})
  config.model.kwargs = {'num_filters': 4}  # replaces tiny_config's simple_cnn widths
  config.train.update({'cached_features': True, 'batch_size': 256})
  backbone = models.get_model('resnet18', num_filters=4, features_only=True)
  init = jax.jit(lambda: backbone.init(jax.random.key(0), np.zeros((1, size, size, 3)), train=False))  # op by op: slow
  weights.save(tmp_path / 'pretrained', init())
  return config, extracted


@pytest.mark.slow  # Two ResNet compilations: over a minute on a 2-core CPU.
def test_cached_features_run_reports_test_selected_beside_the_val_selected_epoch(builder64, tfds_dir, tmp_path,
                                                                                  monkeypatch):
  config, extracted = _resnet_probe(tfds_dir, tmp_path, monkeypatch, 64)
  config.train.num_epochs = 4
  config.eval.report_test_selected = True
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  history = {h['step']: h['metrics'] for h in test_history.load(tmp_path / 'run')}
  assert extracted == [256, 256, 256]  # train, val and (for the report) test features
  assert sorted(history) == [1, 2, 3, 4] and all(h['num_examples'] == 256 for h in history.values())
  with checkpoint.Checkpointer(tmp_path / 'run') as ckpt:
    assert results['checkpoint_step'] == ckpt.best_step()
  assert results['test']['num_examples'] == 624  # the headline: the whole test split, val-chosen epoch
  chosen = results['test_selected']
  assert chosen['auc'] == max(h['auc'] for h in history.values()) and chosen['num_evaluations'] == 4
  assert chosen['auc'] == history[chosen['checkpoint_step']]['auc'] and 'OPTIMISTIC' in chosen['protocol']
  assert results['run']['wall_time_s'] > 0


def test_a_val_only_cached_features_run_never_reads_the_test_split(builder64, tfds_dir, tmp_path, monkeypatch):
  config, extracted = _resnet_probe(tfds_dir, tmp_path, monkeypatch, 32)
  config.train.num_epochs = 2
  config.eval.evaluate_test = False
  refuse_to_read_split(monkeypatch, config.data.test_split)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert extracted == [256, 256]  # train and val features only
  saved = json.loads((tmp_path / 'run' / files.RESULTS).read_text())
  assert not [k for k in saved if k.startswith('test')] and not [k for k in results if k.startswith('test')]
  assert saved['val']['num_examples'] == 609 and saved['val_at_val_threshold']['chosen_on'] == 'val_pd'
  assert "the 'test' split was not read" in saved['protocol'] and saved['checkpoint_step'] in (1, 2)
