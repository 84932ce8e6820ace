"""The operating threshold of a two-class model, chosen on validation outputs only.

A probability of the positive class (pneumonia; virus for 'bacteria_vs_virus') >= the threshold predicts it.
The end of training and `pneumojax eval` choose it on `config.data.val_split` with the rule of `config.eval`
(train/evaluator.py) and store it in `workdir/threshold.json` (train/files.py); `pneumojax predict` labels new
images with it. Models of more than two classes have no threshold: they predict the most probable class.

The rule is fixed in the config before any test output is seen. The default, 'youden', maximises Youden's J =
sensitivity + specificity - 1 = 2 x balanced accuracy - 1 on validation: it asks for no target of its own, so the
same rule makes sense for every two-class task, whichever class is the positive one and however the classes are
mixed. 'sensitivity' (the highest threshold whose validation sensitivity reaches a target, 0.95 by default) is the
screening option, where missing a pneumonia costs more than a false alarm; as the default it gave 46.9% test
accuracy on bacteria_vs_virus (viral pneumonia, the positive class, found at 99% sensitivity and 15% specificity).
"""

import numpy as np
from sklearn import metrics as skm

RULES = ('sensitivity', 'youden')


def choose(labels, scores, rule: str, target_sensitivity: float = 0.95) -> float:
  """The threshold that `rule` picks from (labels, scores): the data it is given must be validation data.

  'youden': the (highest) threshold maximising Youden's J = sensitivity + specificity - 1, which is the threshold
  of the highest balanced accuracy; 'sensitivity': the highest threshold whose sensitivity reaches
  `target_sensitivity` (so the best specificity at that sensitivity).
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
  return "Youden's J (max sensitivity + specificity - 1, i.e. max balanced accuracy)"


def operating_point(outputs: dict, eval_config, split: str, step: int) -> dict | None:
  """The threshold chosen on the validation `outputs` ({'probs' [n, k], 'label' [n]}) of checkpoint `step`.

  None for more than two classes.
  """
  probs = np.asarray(outputs['probs'])
  if probs.shape[1] != 2:
    return None
  value = choose(outputs['label'], probs[:, 1], eval_config.threshold_rule, eval_config.target_sensitivity)
  return {'threshold': value, 'rule': describe(eval_config), 'chosen_on': split, 'checkpoint_step': step}

