"""The test-selected protocol (`config.eval.report_test_selected`), reported beside, never instead of, the headline.

Kermany et al. (2018) chose their checkpoint by evaluating the test set during training. To measure how much that
flatters a model, a run with `report_test_selected` evaluates the test split at every validation evaluation,
keeps the history in `workdir/test_history.json`, and results.json gets `test_selected`: the test metrics of the
evaluation with the highest test ROC-AUC, labelled as optimistic. The headline `test` entry stays the
checkpoint chosen on validation data; nothing else (checkpoint retention, threshold, predict) looks at the test.
Each recorded evaluation of a two-class model also holds `at_test_threshold`: its metrics at the threshold that
the test outputs themselves choose (Youden's J), so that the ablation can measure choosing both the checkpoint and
the threshold on the test set.
"""

import json
import math

import numpy as np
from etils import epath

from pneumojax import atomic
from pneumojax.evaluation import threshold
from pneumojax.train import files


def protocol(config) -> str:
  every = f'{config.train.eval_every_steps} steps' if config.train.eval_every_steps else 'epoch'
  if config.train.cached_features:
    every = 'epoch'
  return (f'OPTIMISTIC, not a held-out estimate (Kermany et al. 2018\'s protocol): the {config.data.test_split!r} '
          f'split was evaluated at every validation evaluation (every {every}) and these are the metrics, at the '
          'fixed threshold 0.5, of the evaluation with the highest test ROC-AUC, i.e. the test set chose the '
          f'checkpoint. The headline "test" entry is the checkpoint chosen on {config.data.val_split!r}.')


def load(workdir, up_to_step: int | None = None) -> list[dict]:
  """The recorded test evaluations [{'step', 'metrics'}], those after `up_to_step` left out (a resumed run
  repeats them)."""
  path = epath.Path(workdir) / files.TEST_HISTORY
  history = json.loads(path.read_text()) if path.exists() else []
  return [h for h in history if up_to_step is None or h['step'] <= up_to_step]


def metrics(collected) -> dict:
  """What one test evaluation records, from its collected outputs (evaluation/metrics.EvalMetrics): the metrics at
  the threshold 0.5 and, for two classes, `at_test_threshold` (see the module docstring)."""
  values, outputs = collected.compute(), collected.outputs.compute()
  if outputs['probs'].shape[1] == 2 and len(np.unique(outputs['label'])) == 2:
    chosen = threshold.choose(outputs['label'], outputs['probs'][:, 1], 'youden')
    values['at_test_threshold'] = {'threshold': chosen, **collected.compute(chosen)}
  return values


def record(workdir, history: list[dict], step: int, metrics: dict, write: bool = True) -> list[dict]:
  """`history` plus this step's test metrics, written to workdir/test_history.json (if `write`)."""
  history = [h for h in history if h['step'] != step] + [{'step': step, 'metrics': metrics}]
  if write:
    atomic.write_json(epath.Path(workdir) / files.TEST_HISTORY, history)
  return history


def best(history: list[dict]) -> dict:
  """The evaluation with the highest test AUC (the earliest on ties; an undefined AUC ranks last)."""
  if not history:
    raise ValueError('No test evaluation was recorded during training: cannot report the test-selected protocol.')

  def score(h):
    auc = h['metrics']['auc']
    return (-math.inf if math.isnan(auc) else auc), -h['step']
  return max(history, key=score)


def entry(config, history: list[dict]) -> dict:
  """results.json's `test_selected`: the chosen evaluation's metrics, its step, and the protocol text."""
  chosen = best(history)
  return {'split': config.data.test_split, **chosen['metrics'], 'checkpoint_step': chosen['step'],
          'num_evaluations': len(history), 'protocol': protocol(config)}
