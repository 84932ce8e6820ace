"""Kermany et al. (2018)'s transfer learning: a frozen pretrained backbone's features, computed once, and the
model's softmax head trained on them (`config.train.cached_features=True`).

The backbone (from `model.init_from`; BatchNorm with its running statistics) runs once over the train split,
without augmentation, and once over the validation split. The head then trains on these cached features for
`train.num_epochs` epochs of `train.batch_size`, with the run's optimizer and class weighting, and is evaluated
on the validation features after every epoch. Each epoch is saved as an ordinary checkpoint of the whole model
(the best by validation AUC is kept), so the test evaluation, `pneumojax eval` and `predict` treat the run as any
other. It runs in one process and does not resume: it takes minutes where fine-tuning takes hours.
With `config.eval.report_test_selected` the test features are cached too and the head is evaluated on them after
every epoch, for the separately labelled test-selected entry (train/test_selected.py).
"""

import functools
import logging
import time

import jax
import numpy as np
from etils import epath

from pneumojax import metrics as metrics_lib
from pneumojax.data import paths, pipeline
from pneumojax.models.head import HEAD, Head
from pneumojax.train import checkpoint, loop, optim, parallel, step, test_selected
from pneumojax.train.state import TrainState

log = logging.getLogger(__name__)


def extract_features(model, variables, dataset) -> dict[str, np.ndarray]:
  """{'features': [n, D], 'label': [n]} of the real (mask 1) examples of a padded eval dataset."""
  backbone = model.clone(features_only=True)
  features_fn = jax.jit(lambda v, x: backbone.apply(v, x, train=False))
  features, labels = [], []
  for batch in dataset.as_numpy_iterator():
    real = batch['mask'] > 0
    features.append(np.asarray(features_fn(variables, batch['image']))[real])
    labels.append(batch['label'][real])
  return {'features': np.concatenate(features), 'label': np.concatenate(labels)}


def _batches(data: dict, batch_size: int, rng: np.random.Generator | None = None):
  """Shuffled full batches if `rng` is given (training), else every example once, in order, the last batch padded."""
  n = len(data['label'])
  if rng is None:
    order = np.concatenate([np.arange(n), np.zeros(-n % batch_size, int)])  # Padding: masked copies of example 0.
    mask = np.arange(len(order)) < n
  else:
    order = rng.permutation(n)[:n - n % batch_size]
    mask = np.ones(len(order), bool)
  for start in range(0, len(order), batch_size):
    index = order[start:start + batch_size]
    yield {'image': data['features'][index], 'label': data['label'][index].astype(np.int32),
           'mask': mask[start:start + batch_size].astype(np.float32)}


def evaluate_head(dp, state, data: dict, batch_size: int) -> dict:
  """The metrics of the head in `state` (replicated) on cached features `data`, every example once."""
  collection = metrics_lib.EvalMetrics.empty()
  for batch in _batches(data, batch_size):
    collection = collection.merge(metrics_lib.EvalMetrics.single_from_model_output(
        **dp.eval_step(state, dp.shard(batch))))
  return collection.compute()


def train_head(config, head: Head, head_params, train: dict, val: dict, class_weights=None, test: dict | None = None):
  """Yields (epoch, head parameters, validation metrics) after each of `config.train.num_epochs` epochs.

  With `test` features, the validation metrics also hold the test metrics under 'test' (the test-selected report).
  """
  steps_per_epoch = len(train['label']) // config.train.batch_size
  tx, _ = optim.make_optimizer(config.optim, steps_per_epoch, config.train.num_epochs * steps_per_epoch)

  def apply_head(variables, features, train, rngs=None):  # As the steps call a model.
    return head.apply({'params': variables['params'][HEAD]}, features, train=train, rngs=rngs)

  state = TrainState.create(apply_fn=apply_head, params={HEAD: head_params}, tx=tx,
                            rng=jax.random.key_data(jax.random.key(config.seed)))
  dp = parallel.DataParallel(config.train.parallel, functools.partial(step.train_step, class_weights=class_weights),
                             step.eval_step)
  state = dp.replicate(state)
  rng = np.random.default_rng(config.seed)
  for epoch in range(1, config.train.num_epochs + 1):
    for batch in _batches(train, config.train.batch_size, rng):
      state, _ = dp.train_step(state, dp.shard(batch))
    val_results = evaluate_head(dp, state, val, config.train.eval_batch_size)
    if test is not None:
      val_results['test'] = evaluate_head(dp, state, test, config.train.eval_batch_size)
    yield epoch, dp.unreplicate(state).params[HEAD], val_results


def train_and_evaluate(config, workdir, started: float | None = None) -> dict:
  """The cached-features run in `workdir`; returns the test metrics of the best-on-validation epoch."""
  started = started or time.perf_counter()
  if jax.process_count() > 1:
    raise ValueError('train.cached_features runs in one process: start it without jax.distributed.')
  if config.data.class_balance == 'oversample':
    raise ValueError("train.cached_features weights classes but does not oversample: set "
                     "--config.data.class_balance=weights (or none).")
  workdir = epath.Path(workdir)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.checkpoint_keep)
  if ckpt.latest_step() is not None:
    raise ValueError(f'{workdir} already holds checkpoints, and cached-feature runs do not resume: use a new '
                     '--workdir.')
  builder = paths.get_builder(config.data)
  state = loop.new_run_state(config, loop.initial_state(config, steps_per_epoch=1, total_steps=1)[0])
  model = loop.build_model(config)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  cached = {}
  roles = [('train', config.data.train_split), ('val', config.data.val_split)]
  if config.eval.report_test_selected:
    roles.append(('test', config.data.test_split))
  for role, split in roles:
    dataset, _ = pipeline.eval_dataset(builder, config.data, split, config.train.eval_batch_size)
    cached[role] = extract_features(model, variables, dataset)
    log.info('Cached the %s features of %s: %s.', config.model.name, split, cached[role]['features'].shape)
  class_weights = None
  if config.data.class_balance == 'weights':
    class_weights = step.class_weights_from_counts(np.bincount(cached['train']['label'], minlength=model.num_classes))
  head = Head(model.num_classes, model.hidden, model.dropout_rate, model.dtype)
  test_history = [] if 'test' in cached else None
  for epoch, head_params, val_results in train_head(config, head, state.params[HEAD], cached['train'],
                                                    cached['val'], class_weights, cached.get('test')):
    log.info('epoch %d validation (%s): auc %.4f, accuracy %.4f', epoch, config.data.val_split,
             val_results['auc'], val_results['accuracy'])
    if test_history is not None:
      test_history = test_selected.record(workdir, test_history, epoch, val_results.pop('test'))
    state = state.replace(step=epoch, params={**state.params, HEAD: head_params})
    ckpt.save(epoch, state, config, val_results)
  dp = parallel.DataParallel(config.train.parallel, step.train_step, step.eval_step)
  return loop.final_test(config, workdir, builder, dp, ckpt, dp.replicate(state), started=started)
