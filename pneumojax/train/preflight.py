"""Preflight: checks a run's config and workdir before any expensive work, with messages that say what to change."""

import os
import tempfile

import jax

from pneumojax import models
from pneumojax.data import builder, pipeline, splits, tasks
from pneumojax.evaluation import threshold
from pneumojax.models import layers
from pneumojax.train import optim, parallel

_CHOICES = {
    'data.resolution': builder.RESOLUTIONS,
    'data.resize': builder.RESIZE_METHODS,
    'data.channels': (1, 3),
    'data.normalize': tuple(pipeline.NORMALIZATIONS),
    'data.class_balance': ('none', 'weights', 'oversample'),
    'data.train_split': splits.ALL,
    'data.val_split': splits.ALL,
    'data.test_split': splits.ALL,
    'data.task': tuple(tasks.CLASS_NAMES),
    'eval.threshold_rule': threshold.RULES,
    'model.name': tuple(models.list_models()),
    'model.layers': layers.CHOICES,
    'optim.name': optim.OPTIMIZERS,
    'optim.schedule': optim.SCHEDULES,
    'train.parallel': parallel.MODES,
}
_POSITIVE = ('train.batch_size', 'train.eval_batch_size', 'train.log_every_steps', 'train.checkpoint_keep',
             'optim.learning_rate')
_POSITIVE_OR_ZERO = {'data.image_size': 'the stored resolution', 'train.eval_every_steps': 'every epoch',
                     'train.steps_per_dispatch': 'log_every_steps', 'data.device_memory_mb': 'the tf.data pipeline',
                     'distributed.cpu_devices': 'chosen by the number of cores'}


def _get(config, dotted: str):
  for key in dotted.split('.'):
    config = config[key]
  return config


def check(config, workdir: str) -> None:
  """Raises ValueError naming the first bad field (or an unwritable workdir) and the values it may take."""
  for field, choices in _CHOICES.items():
    if _get(config, field) not in choices:
      raise ValueError(f'--config.{field}={_get(config, field)!r} is not one of: '
                       f'{", ".join(map(str, choices))}.')
  for field in _POSITIVE:
    if not _get(config, field) > 0:
      raise ValueError(f'--config.{field}={_get(config, field)!r} must be positive.')
  for field, zero_means in _POSITIVE_OR_ZERO.items():
    if _get(config, field) < 0:
      raise ValueError(f'--config.{field}={_get(config, field)!r} must be positive, or 0 for {zero_means}.')
  if config.train.num_steps <= 0 and config.train.num_epochs <= 0:
    raise ValueError('Set --config.train.num_epochs or --config.train.num_steps to a positive number.')
  if not 0 < config.data.val_fraction < 1:
    raise ValueError(f'--config.data.val_fraction={config.data.val_fraction} must be between 0 and 1.')
  if config.data.val_split == config.data.test_split:
    raise ValueError(f'The validation split chooses the checkpoint: it cannot be the test split '
                     f'({config.data.test_split!r}). Set --config.data.val_split=val_pd.')
  if config.data.train_split in (config.data.val_split, config.data.test_split):
    raise ValueError(f'--config.data.train_split={config.data.train_split!r} is also the validation or test split.')
  if config.eval.report_test_selected and not config.eval.evaluate_test:
    raise ValueError('--config.eval.report_test_selected=True evaluates the test split at every validation, and '
                     '--config.eval.evaluate_test=False forbids reading it: set one of them the other way.')
  check_batch_sizes(config)
  _check_writable(workdir)


def check_batch_sizes(config) -> None:
  for name in ('batch_size', 'eval_batch_size'):
    if config.train[name] % jax.device_count():
      raise ValueError(f'train.{name}={config.train[name]} must be a multiple of the {jax.device_count()} '
                       f'devices: set --config.train.{name} to a multiple of {jax.device_count()}.')


def _check_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ValueError(f'The workdir {workdir} cannot be written ({e}); choose another --workdir.') from None
