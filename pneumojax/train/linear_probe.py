"""Kermany et al. (2018)'s transfer learning: a frozen pretrained backbone's features, computed once, and the
model's softmax head trained on them (`config.train.cached_features=True`).

The backbone (from `model.init_from`; BatchNorm with its running statistics) runs once over the train split,
without augmentation, and once over the validation split. The head then trains on these cached features for
`train.num_epochs` epochs of `train.batch_size`, with the run's optimizer and class weighting, and is evaluated
on the validation features after every epoch. Each epoch is saved as an ordinary checkpoint of the whole model
(the best by validation AUC is kept), so the test evaluation, `pneumojax eval` and `predict` treat the run as any
other. It runs in one process and does not resume: it takes minutes where fine-tuning takes hours.
With `config.eval.report_test_selected` the test features are cached too and the head is evaluated on them after
every epoch, for the separately labelled test-selected entry (train/test_history.py). A sibling of the fine-tuning
trainer (train/finetune.py): both build on train/run.py.
"""

import functools
import logging

import jax
import numpy as np
from etils import epath

from pneumojax.data import pipeline, prepare
from pneumojax.models.head import HEAD, Head
from pneumojax.train import checkpoint, evaluator, optim, parallel, run, step, test_history
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
  dp = parallel.DataParallel(config.train.parallel,
                             train_step=functools.partial(step.train_step, class_weights=class_weights))
  state = dp.replicate(state)
  rng = np.random.default_rng(config.seed)
  for epoch in range(1, config.train.num_epochs + 1):
    for batch in _batches(train, config.train.batch_size, rng):
      state, _ = dp.train_step(state, dp.shard(batch))
    val_results = evaluator.outputs(dp, state, _batches(val, config.train.eval_batch_size)).compute()
    if test is not None:
      val_results['test'] = evaluator.outputs(dp, state, _batches(test, config.train.eval_batch_size)).compute()
    yield epoch, dp.unreplicate(state).params[HEAD], val_results


def train_and_evaluate(config, workdir, started: float) -> dict:
  """The cached-features run in `workdir`; returns the results of run.finish. `started`: when the run began
  (`time.perf_counter()`), for its recorded wall time."""
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
  builder = prepare.get_builder(config.data)
  state = run.new_run_state(config, run.initial_state(config, steps_per_epoch=1, total_steps=1)[0])
  model = run.build_model(config)
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
  head = Head(model.num_classes, model.hidden, model.dropout_rate, model.dtype, model.batch_axis)
  history = [] if 'test' in cached else None
  for epoch, head_params, val_results in train_head(config, head, state.params[HEAD], cached['train'],
                                                    cached['val'], class_weights, cached.get('test')):
    log.info('epoch %d validation (%s): auc %.4f, accuracy %.4f, balanced accuracy %.4f', epoch, config.data.val_split,
             val_results['auc'], val_results['accuracy'], val_results['balanced_accuracy'])
    if history is not None:
      history = test_history.record(workdir, history, epoch, val_results.pop('test'))
    state = state.replace(step=epoch, params={**state.params, HEAD: head_params})
    ckpt.save(epoch, state, config, val_results)
  dp = parallel.DataParallel(config.train.parallel)
  return run.finish(config, workdir, builder, dp, ckpt, dp.replicate(state), started)
