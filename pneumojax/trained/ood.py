"""A trained run's out-of-distribution detector: are an image's features like those of the training films?

The features are the input of the model's last Dense layer (the pooled features of `simple_cnn`, the input of a
backbone head's output layer), captured generically with `nn.intercept_methods`. Class-conditional Gaussians
with a shared covariance are fitted to the features of the training split (`data.train_split`, train_pd), and an
image's score is its Mahalanobis distance to the nearest class mean (evaluation/ood.py). The threshold is the
`QUANTILE` quantile of the scores of the validation split (`data.val_split`, val_pd): about 1% of in-distribution
films are flagged by design; the test split chooses nothing.

The detector of a checkpoint is fitted the first time it is needed (`pneumojax predict`, or the Python API's
`predict`), which reads the run's prepared train and validation data once, and stored in `workdir/ood.npz`;
later uses read that file. A file of another checkpoint (or of another QUANTILE) is fitted again.
"""

import dataclasses
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from pneumojax import atomic
from pneumojax.data import prepare, tasks
from pneumojax.evaluation import ood
from pneumojax.train.run import eval_batches

FILE = 'ood.npz'
QUANTILE = 0.99  # fixed before any test image was scored; see README for the measured flag rates.
log = logging.getLogger(__name__)


def outputs(model: nn.Module, variables, images) -> tuple[jax.Array, jax.Array]:
  """(probabilities [b, k], float32 features [b, D]): the model's softmax output and the input of its last Dense
  layer, from one forward pass in inference mode."""
  dense_inputs = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense) and context.method_name == '__call__':
      dense_inputs.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    logits = model.apply(variables, images, train=False)
  if not dense_inputs:
    raise ValueError(f'{type(model).__name__} has no Dense layer: its penultimate features cannot be found.')
  return jax.nn.softmax(logits), dense_inputs[-1].astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Detector:
  """The Gaussians of a checkpoint's training features and the threshold chosen on validation."""
  gaussians: ood.Gaussians
  threshold: float
  checkpoint_step: int

  def scores(self, features) -> np.ndarray:
    return ood.distances(self.gaussians, features)


def detector(run, outputs_fn) -> Detector:
  """The detector of `run`'s checkpoint: read from `workdir/ood.npz`, or fitted and stored there.

  `outputs_fn(variables, images)` is `outputs` of the run's model (jitted by the caller, who also predicts with it).
  """
  path = epath.Path(run.workdir) / FILE
  if path.exists():
    with np.load(path) as stored:
      if int(stored['checkpoint_step']) == run.step and float(stored['quantile']) == QUANTILE:
        return Detector(ood.Gaussians(stored['means'], stored['precision']), float(stored['threshold']), run.step)
    log.info('%s is of another checkpoint or quantile: fitting it again for step %d.', path, run.step)
  fitted = _fit(run, outputs_fn)
  atomic.write_npz(path, means=fitted.gaussians.means, precision=fitted.gaussians.precision,
                   threshold=fitted.threshold, quantile=QUANTILE, checkpoint_step=fitted.checkpoint_step)
  return fitted


def _fit(run, outputs_fn) -> Detector:
  config = run.config
  try:
    builder = prepare.get_builder(config.data)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'{epath.Path(run.workdir) / FILE} is missing, and fitting it needs the run\'s '
                            f'{config.data.train_split!r} and {config.data.val_split!r} data: {e}') from e
  log.info('Fitting the out-of-distribution detector of checkpoint %d on %r, its threshold on %r.', run.step,
           config.data.train_split, config.data.val_split)
  features, labels = _features(run, outputs_fn, builder, config.data.train_split)
  gaussians = ood.fit(features, labels, tasks.num_classes(config.data))
  val_scores = ood.distances(gaussians, _features(run, outputs_fn, builder, config.data.val_split)[0])
  threshold = float(np.quantile(val_scores, QUANTILE))
  log.info('Out-of-distribution threshold %.3f: the %g quantile of %d %r scores.', threshold, QUANTILE,
           len(val_scores), config.data.val_split)
  return Detector(gaussians, threshold, run.step)


def _features(run, outputs_fn, builder, split) -> tuple[np.ndarray, np.ndarray]:
  """([N, D] features, [N] labels) of every example of `split`, the padding left out."""
  features, labels = [], []
  for batch in eval_batches(builder, run.config, split):
    real = batch['mask'] > 0
    features.append(np.asarray(outputs_fn(run.variables, batch['image'])[1])[real])
    labels.append(batch['label'][real])
  return np.concatenate(features), np.concatenate(labels)
