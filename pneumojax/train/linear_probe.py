"""Kermany et al. (2018)'s transfer learning: a frozen pretrained backbone's features, computed once, and the
model's softmax head trained on them (`config.train.cached_features=True`).

The backbone (from `model.init_from`; BatchNorm with its running statistics) runs once over the train split,
without augmentation, and once over the validation split. The head then trains on these cached features for
`train.num_epochs` epochs of `train.batch_size`, with the run's optimizer and class weighting, and is evaluated
on the validation features after every epoch. Each epoch is saved as an ordinary checkpoint of the whole model
(the best by validation AUC is kept), so the test evaluation, `pneumojax eval` and `predict` treat the run as any
other. It runs in one process and does not resume: it takes minutes where fine-tuning takes hours.

Two options make the probe stronger without making it a different model (experiments/best.py uses both):
`train.cached_views` caches that many augmented views of every train image besides the plain one (augmentation
for a model whose features are computed once), and `train.standardize_features` trains the head on standardised
features, folding the scaling into the head's first layer before each checkpoint.
With `config.eval.report_test_selected` the test features are cached too and the head is evaluated on them after
every epoch, for the separately labelled test-selected entry (train/test_history.py). A sibling of the fine-tuning
trainer (train/finetune.py): both build on train/run.py.
"""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from pneumojax.data import augment_jax, device, pipeline, prepare
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


def augmented_views(model, variables, split: device.Split, data_config, num_views: int, seed: int,
                    batch_size: int) -> dict[str, np.ndarray]:
  """{'features': [num_views * n, D], 'label'} of `num_views` augmented views (data/augment_jax.py, drawn from
  `seed`) of the n real examples of `split` (padded to whole batches of `batch_size`), view after view."""
  backbone = model.clone(features_only=True)
  size = pipeline.input_shape(data_config)[0]

  @jax.jit
  def features_fn(v, images, key):
    images = images.astype(jnp.float32) / 255.0
    images = augment_jax.apply(images, augment_jax.draw_params(key, images.shape[0], data_config), size)
    return backbone.apply(v, device.normalise(images, data_config), train=False)

  real = split.mask > 0
  features = []
  for view in range(num_views):
    key = jax.random.fold_in(jax.random.key(seed), view)
    features.append(np.concatenate([
        np.asarray(features_fn(variables, split.image[start:start + batch_size], jax.random.fold_in(key, start)))
        for start in range(0, len(split.mask), batch_size)])[real])
    log.info('Computed the features of augmented view %d/%d of %s.', view + 1, num_views, split.name)
  return {'features': np.concatenate(features), 'label': np.tile(split.label[real], num_views)}


def standardizer(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, sd) of train `features` [n, D] per dimension; a constant dimension gets sd 1."""
  mean, sd = features.mean(axis=0), features.std(axis=0)
  return mean, np.where(sd > 0, sd, 1.0).astype(features.dtype)


def fold_standardizer(head_params: dict, mean: np.ndarray, sd: np.ndarray) -> dict:
  """The head's parameters for raw features, from those trained on (features - mean) / sd: its first dense layer
  computes ((x - mean) / sd) @ W + b = x @ (W / sd) + (b - (mean / sd) @ W)."""
  first = min((name for name in head_params if name.startswith('hidden')), default='out')
  kernel, bias = head_params[first]['kernel'], head_params[first]['bias']
  folded = {'kernel': kernel / sd[:, None], 'bias': bias - (mean / sd) @ kernel}
  return {**head_params, first: folded}


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
      test_outputs = evaluator.outputs(dp, state, _batches(test, config.train.eval_batch_size))
      val_results['test'] = test_history.metrics(test_outputs)
    yield epoch, dp.unreplicate(state).params[HEAD], val_results


def _cache(config, model, variables, builder, roles) -> dict[str, dict]:
  """{role: {'features', 'label'}} for the (role, split) pairs: the plain images' features and, for 'train', the
  `train.cached_views` augmented views after them."""
  cached = {}
  for role, split in roles:
    dataset, _ = pipeline.eval_dataset(builder, config.data, split, config.train.eval_batch_size)
    cached[role] = extract_features(model, variables, dataset)
    if role == 'train' and config.train.cached_views:
      views = augmented_views(model, variables,
                              device.read_split(builder, split, config.data, pad_to=config.train.eval_batch_size),
                              config.data, config.train.cached_views, config.seed, config.train.eval_batch_size)
      cached[role] = {k: np.concatenate([cached[role][k], views[k]]) for k in cached[role]}
    log.info('Cached the %s features of %s: %s.', config.model.name, split, cached[role]['features'].shape)
  return cached


def train_and_evaluate(config, workdir, started: float) -> dict:
  """The cached-features run in `workdir`; returns the results of run.finish. `started`: when the run began
  (`time.perf_counter()`), for its recorded wall time."""
  if jax.process_count() > 1:
    raise ValueError('train.cached_features runs in one process: start it without jax.distributed.')
  if config.data.class_balance == 'oversample':
    raise ValueError("train.cached_features weights classes but does not oversample: set "
                     "--config.data.class_balance=weights (or none).")
  if config.train.cached_views and not config.data.augment:
    raise ValueError(f'train.cached_views={config.train.cached_views} caches augmented views, but data.augment is '
                     'off: set --config.data.augment=True (or cached_views=0).')
  workdir = epath.Path(workdir)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.checkpoint_keep)
  if ckpt.latest_step() is not None:
    raise ValueError(f'{workdir} already holds checkpoints, and cached-feature runs do not resume: use a new '
                     '--workdir.')
  builder = prepare.get_builder(config.data)
  state = run.new_run_state(config, run.initial_state(config, steps_per_epoch=1, total_steps=1)[0])
  model = run.build_model(config)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  roles = [('train', config.data.train_split), ('val', config.data.val_split)]
  if config.eval.report_test_selected:
    roles.append(('test', config.data.test_split))
  cached = _cache(config, model, variables, builder, roles)
  mean, sd = standardizer(cached['train']['features']) if config.train.standardize_features else (0.0, 1.0)
  cached = {role: {**data, 'features': (data['features'] - mean) / sd} for role, data in cached.items()}
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
    if config.train.standardize_features:
      head_params = fold_standardizer(head_params, mean, sd)
    state = state.replace(step=epoch, params={**state.params, HEAD: head_params})
    ckpt.save(epoch, state, config, val_results)
  dp = parallel.DataParallel(config.train.parallel)
  return run.finish(config, workdir, builder, dp, ckpt, dp.replicate(state), started)
