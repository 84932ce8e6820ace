"""Ablation: training augmentation on vs off (random resized crop, rotation, brightness/contrast), 3 seeds.

  pneumojax sweep experiments/ablations/augmentation.py --config.data.manual_dir=../shared/data/chest_xray

Base: experiments/quickstart.py (64 px CNN, 15 epochs). Shorter CPU check: add --config.train.num_epochs=2.
"""


def get_sweep():
  return {
      'config': 'experiments/quickstart.py',
      'grid': {'data.augment': [True, False]},
      'seeds': [0, 1, 2],
  }
