"""Ablation: input resolution (64, 128, 224 px) of the quickstart CNN, 3 seeds.

  pneumojax sweep experiments/ablations/resolution.py --config.data.manual_dir=../shared/data/chest_xray

Everything else is experiments/quickstart.py (15 epochs); the model's global average pooling makes it size-agnostic.
A 224 px run took 16x the wall time of a 64 px one here (12x the pixels). Shorter CPU check: add --config.train.num_epochs=2. The 64 px runs are
those of the threshold-rule sweep's Youden setting (the same config), copied here (the sweep checked that their
config is this one's; their results.json keeps the command that trained them).
"""


def get_sweep():
  return {
      'config': 'experiments/quickstart.py',
      'grid': {'data.resolution': [64, 128, 224]},
      'seeds': [0, 1, 2],
  }
