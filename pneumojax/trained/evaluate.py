"""`pneumojax eval` and the Python API's `metrics`/`figures`: a run's checkpoint on a split -> metrics with
patient-bootstrap intervals, figures, JSON.

`evaluate` computes; `write` stores `workdir/eval/<split>/metrics.json` and the figures as PNGs beside it.
Protocol: the checkpoint is the best by validation ROC-AUC (unless a step is named); the operating threshold is
chosen on the validation split's outputs of that checkpoint (`config.eval`, by train/evaluator.py) and stored in
`workdir/threshold.json` for `pneumojax predict`; the evaluated split chooses nothing. Two-class tasks are
reported at the threshold 0.5 and at the validation-chosen one; three classes at the most probable class.
"""

import dataclasses
import functools
import logging

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from matplotlib.figure import Figure
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from pneumojax import atomic
from pneumojax.data import pipeline, prepare, splits, tasks
from pneumojax.evaluation import bootstrap, metrics as metrics_lib, plots
from pneumojax.train import evaluator, files, parallel, preflight
from pneumojax.train.run import eval_batches

METRICS = 'metrics.json'
CONFIDENCE = 0.95
NUM_ERRORS_SHOWN = 16
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """A checkpoint on a split: `results` (what metrics.json holds), its outputs `values` ('label' [N], 'probs'
  [N, k]), the split's metadata `meta` (patient ids, file names) and the `config` it was evaluated with."""
  results: dict
  values: dict
  meta: dict
  config: ml_collections.ConfigDict
  chosen_on_validation: bool


def evaluate(run, split: str = 'test', chosen_on_validation: bool = True,
             eval_overrides: dict | None = None) -> Evaluation:
  """Evaluates `run` (trained/load.py) on `split`; `eval_overrides` update a copy of its `config.eval`.

  `chosen_on_validation`: whether the run's checkpoint is its best on validation (else named by the user).
  """
  config = run.config.copy_and_resolve_references()
  config.eval.update(eval_overrides or {})
  preflight.check_batch_sizes(config)
  builder = prepare.get_builder(config.data)
  dp = parallel.DataParallel(config.train.parallel)
  val_split, step = config.data.val_split, run.step
  collected, point = evaluator.evaluate(config, dp, dp.replicate(run.state), step,
                                        {name: eval_batches(builder, config, name)
                                         for name in dict.fromkeys([val_split, split])})
  values = collected[split].outputs.compute()
  meta = splits.split_metadata(builder, split, config.data)
  thresholds = ({'fixed threshold': 0.5, 'validation-chosen threshold': point['threshold']} if point
                else {'most probable class': None})
  results = {
      'split': split,
      'num_examples': len(values['label']),
      'num_patients': len(np.unique(meta['patient_id'])),
      'checkpoint_step': step,
      'checkpoint': str(epath.Path(run.workdir) / 'checkpoints' / str(step)),
      'model': config.model.name,
      'task': config.data.task,
      'class_names': list(tasks.class_names(config.data)),
      'threshold': point,
      'loss': float(collected[split].loss.compute()),
      'operating_points': {name: _operating_point(values, meta['patient_id'], t, config.eval)
                           for name, t in thresholds.items()},
      'bootstrap': {'unit': 'patient', 'method': 'percentile', 'confidence': CONFIDENCE,
                    'resamples': config.eval.bootstrap_samples, 'seed': config.eval.bootstrap_seed},
      'protocol': _protocol(config, split, step, chosen_on_validation, point, meta),
      'eval': config.eval.to_dict(),
      'data': config.data.to_dict(),
  }
  log.info('%s (%d images), checkpoint step %d: %s', split, results['num_examples'], step,
           {name: {k: round(v, 4) for k, v in op.items() if isinstance(v, float)}
            for name, op in results['operating_points'].items()})
  return Evaluation(results, values, meta, config, chosen_on_validation)


def write(run, evaluation: Evaluation) -> epath.Path:
  """Writes `workdir/eval/<split>/`: metrics.json and the figures as PNGs; and threshold.json, the threshold of
  the checkpoint that `predict` uses, if it is the best on validation. Returns the folder."""
  results = evaluation.results
  out = epath.Path(run.workdir) / 'eval' / results['split']
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / METRICS, results)
    if results['threshold'] and evaluation.chosen_on_validation:
      files.save_threshold(run.workdir, results['threshold'])
    for name, figure in figures(run, evaluation).items():
      plots.save(figure, out / f'{name}.png')
    log.info('-> %s', out / METRICS)
  return out


def _operating_point(values, patient_ids, threshold: float | None, eval_config) -> dict:
  metric_fn = functools.partial(metrics_lib.classification_metrics, threshold=threshold)
  return {'threshold': threshold, **metric_fn(values['label'], values['probs']),
          'ci95': bootstrap.patient_bootstrap(metric_fn, values['label'], values['probs'], patient_ids,
                                              eval_config.bootstrap_samples, eval_config.bootstrap_seed,
                                              CONFIDENCE)}


def _protocol(config, split, step, chosen_on_validation, point, meta) -> str:
  data, val = config.data, config.data.val_split
  chosen_by = (f'the highest ROC-AUC on {val!r} among the saved evaluations' if chosen_on_validation
               else 'named by the user, not chosen on validation')
  text = [f'Model {config.model.name}, task {data.task} ({", ".join(tasks.class_names(data))}).',
          f'Checkpoint of step {step}, {chosen_by}.']
  if point:
    text.append(f'Operating threshold {point["threshold"]:.4f}, chosen on the {val!r} outputs of that checkpoint: '
                f'{point["rule"]}; metrics are also given at the fixed threshold 0.5.')
  else:
    text.append('The most probable class is predicted (no threshold).')
  if split == val:
    text.append(f'Warning: {split!r} is the split that chose the checkpoint and the threshold: these numbers are '
                'optimistic.')
  else:
    text.append(f'The {split!r} split ({len(meta["label"])} images, {len(np.unique(meta["patient_id"]))} patients) '
                'chose nothing.')
  text.append(f'{CONFIDENCE:.0%} intervals: percentile bootstrap over patients ({config.eval.bootstrap_samples} '
              f'resamples, seed {config.eval.bootstrap_seed}), the threshold held fixed.')
  width, height = (f'{sizes.min()}' if sizes.min() == sizes.max() else f'{sizes.min()}-{sizes.max()}'
                   for sizes in (meta['original_width'], meta['original_height']))
  text.append(f'Images: {data.resolution} px grayscale ({data.resize}), from source files of {width} x {height} px.')
  return ' '.join(text)


def training_history(workdir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The run's train/ and val/ scalars, {tag: (steps, values)}, from its TensorBoard event files."""
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()  # Drops the events a resumed run logged again after its last checkpoint.
  history = {}
  for tag in events.Tags()['tensors']:
    if tag.startswith(('train/', 'val/')):
      by_step = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
      steps = np.array(sorted(by_step))
      history[tag] = (steps, np.array([by_step[s] for s in steps]))
  return history


def figures(run, evaluation: Evaluation) -> dict[str, Figure]:
  """{name: Figure}: 'roc', 'pr', 'confusion_matrix', 'calibration', 'training_curves' (if the workdir has event
  logs) and 'errors' (the most confident errors at the operating point that would be deployed, if any)."""
  results, values, meta, config = evaluation.results, evaluation.values, evaluation.meta, evaluation.config
  names, labels, probs = results['class_names'], values['label'], values['probs']
  ops = results['operating_points']
  thresholds = {name: op['threshold'] for name, op in ops.items() if op['threshold'] is not None}
  shown = {
      'roc': plots.roc_curve(labels, probs, names, thresholds),
      'pr': plots.pr_curve(labels, probs, names, thresholds),
      'confusion_matrix': plots.confusion_matrices({n: op['confusion_matrix'] for n, op in ops.items()}, names),
      'calibration': plots.calibration(labels, probs, names),
  }
  builder = prepare.get_builder(config.data)
  history = training_history(run.workdir)
  if history:
    train_size = pipeline.split_info(builder, config.data.train_split, config.data).num_examples
    shown['training_curves'] = plots.training_curves(history, train_size // config.train.batch_size)
  # Errors at the operating point that would be deployed: the validation-chosen one (or the most probable class).
  decision_name, t = list(thresholds.items())[-1] if thresholds else ('most probable class', None)
  errors = most_confident_errors(labels, probs, t, NUM_ERRORS_SHOWN)
  if len(errors):
    predicted = metrics_lib.predicted_labels(probs, t)
    images = _images_at(builder, results['split'], config.data, errors)
    titles = []
    for i in errors:
      truth, guess = names[labels[i]], names[predicted[i]]
      probabilities = (f'P({names[1]}) = {probs[i, 1]:.3f}' if t is not None else
                       f'P({guess}) = {probs[i, predicted[i]]:.2f}, P({truth}) = {probs[i, labels[i]]:.2f}')
      name = epath.Path(meta['filename'][i]).name
      titles.append(f'{name}\ntrue {truth}, predicted {guess}\n{probabilities}')
    decision = decision_name if t is None else f'{decision_name} {t:.3f}'
    shown['errors'] = plots.image_grid([images[i] for i in errors], titles,
                                       f'The {len(errors)} most confident of {np.sum(predicted != labels)} errors '
                                       f'on {results["split"]!r} ({decision})')
  return shown


def most_confident_errors(labels, probs, threshold: float | None, count: int) -> np.ndarray:
  """Indices of up to `count` misclassified examples, the most confidently wrong first.

  Confidence is the margin by which the decision is wrong: |P(positive) - threshold| for two classes,
  P(predicted) - P(true) otherwise.
  """
  predicted = metrics_lib.predicted_labels(probs, threshold)
  wrong = np.flatnonzero(predicted != labels)
  if probs.shape[1] == 2:
    margin = np.abs(probs[wrong, 1] - threshold)
  else:
    margin = probs[wrong, predicted[wrong]] - probs[wrong, labels[wrong]]
  return wrong[np.argsort(-margin, kind='stable')[:count]]


def _images_at(builder, split, data_config, indices) -> dict[int, np.ndarray]:
  """The stored uint8 [R, R] images of examples `indices` of a split, in `load_split` order."""
  wanted = set(indices.tolist())
  images = splits.load_split(builder, split, data_config).map(lambda ex: ex['image'][..., 0])
  return {i: image for i, image in enumerate(tfds.as_numpy(images)) if i in wanted}
