"""Ablation: class imbalance (train_pd is 26% normal): none vs class-weighted loss vs oversampling, 3 seeds.

  pneumojax sweep experiments/ablations/class_balance.py --config.data.manual_dir=../shared/data/chest_xray

Base: experiments/quickstart.py (64 px CNN, 15 epochs). Shorter CPU check: add --config.train.num_epochs=2.
"""


def get_sweep():
  return {
      'config': 'experiments/quickstart.py',
      'grid': {'data.class_balance': ['none', 'weights', 'oversample']},
      'seeds': [0, 1, 2],
  }
