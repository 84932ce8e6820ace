"""Ablation: the operating threshold's rule, Youden's J (the default) vs the screening rule (sensitivity >= 0.95), 3 seeds.

  pneumojax sweep experiments/ablations/threshold_rule.py --config.data.manual_dir=../shared/data/chest_xray

Both rules choose the threshold on val_pd, for the same checkpoint: the same seed trains the same model in both
settings, so the paired differences are the rule's alone. Base: experiments/quickstart.py (64 px CNN, 15 epochs).
"""


def get_sweep():
  return {
      'config': 'experiments/quickstart.py',
      'grid': {'eval.threshold_rule': ['youden', 'sensitivity']},
      'seeds': [0, 1, 2],
  }
