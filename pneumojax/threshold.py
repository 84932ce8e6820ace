"""The operating threshold of a two-class model: chosen on validation outputs only, stored in the workdir.

A probability of the positive class (pneumonia; virus for 'bacteria_vs_virus') >= the threshold predicts it.
The end of training and `pneumojax eval` choose it on `config.data.val_split` with the rule of `config.eval`
and write `workdir/threshold.json`; `pneumojax predict` labels new images with it. Models of more than two
classes have no threshold: they predict the most probable class.
"""

import json

import numpy as np
from etils import epath
from sklearn import metrics as skm

from pneumojax import files

FILE = 'threshold.json'
RULES = ('sensitivity', 'youden')


def choose(labels, scores, rule: str, target_sensitivity: float = 0.95) -> float:
  """The threshold that `rule` picks from (labels, scores): the data it is given must be validation data.

  'sensitivity': the highest threshold whose sensitivity reaches `target_sensitivity` (so the best
  specificity at that sensitivity); 'youden': the (highest) threshold maximising Youden's J = sensitivity +
  specificity - 1.
  """
  if rule not in RULES:
    raise ValueError(f'Unknown eval.threshold_rule {rule!r}; use one of {", ".join(RULES)}.')
  if len(np.unique(labels)) < 2:
    raise ValueError('The validation outputs hold a single class: no threshold can be chosen on them.')
  # All distinct scores as candidate thresholds, from the highest down; `scores >= t` gives (fpr, tpr).
  fpr, tpr, thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
  if rule == 'youden':
    youden = tpr - fpr
    # Ties (up to float rounding: 0.6 - 0.2 < 0.8 - 0.4) go to the highest threshold.
    return float(thresholds[np.flatnonzero(np.isclose(youden, youden.max()))[0]])
  return float(thresholds[np.argmax(tpr >= target_sensitivity)])  # tpr never falls as the threshold falls.


def describe(eval_config) -> str:
  if eval_config.threshold_rule == 'sensitivity':
    return f'highest threshold with sensitivity >= {eval_config.target_sensitivity:g}'
  return "Youden's J (max sensitivity + specificity - 1)"


def operating_point(outputs: dict, eval_config, split: str, step: int) -> dict | None:
  """The threshold chosen on the validation `outputs` ({'probs' [n, k], 'label' [n]}) of checkpoint `step`.

  None for more than two classes.
  """
  probs = np.asarray(outputs['probs'])
  if probs.shape[1] != 2:
    return None
  value = choose(outputs['label'], probs[:, 1], eval_config.threshold_rule, eval_config.target_sensitivity)
  return {'threshold': value, 'rule': describe(eval_config), 'chosen_on': split, 'checkpoint_step': step}


def save(workdir, point: dict) -> None:
  files.write_json_atomic(epath.Path(workdir) / FILE, point)


def load(workdir, step: int) -> dict:
  """The operating point stored for checkpoint `step`; an error if there is none, or it is another step's."""
  path = epath.Path(workdir) / FILE
  if not path.exists():
    raise FileNotFoundError(f'{path} is missing: run `pneumojax eval --workdir {workdir}` once, to choose the '
                            'threshold on the validation split.')
  point = json.loads(path.read_text())
  if point['checkpoint_step'] != step:
    raise ValueError(f'{path} holds the threshold of checkpoint step {point["checkpoint_step"]}, not of step '
                     f'{step}: run `pneumojax eval --workdir {workdir}` to choose it again.')
  return point
