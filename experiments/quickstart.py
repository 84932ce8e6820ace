"""Quickstart: a small CNN on 64 px grayscale chest X-rays, trained on a 2-core CPU in minutes.

  pneumojax train --config experiments/quickstart.py --workdir runs/quickstart \
      --config.data.manual_dir=../shared/data/chest_xray

Protocol: train on `train_pd` (official train minus 10% of its patients), choose the checkpoint by ROC-AUC on
`val_pd` (those held-out patients), evaluate once on the official 624-image test split.
"""

from pneumojax.config import default_config


def get_config():
  config = default_config()
  config.data.resolution = 64
  config.model.name = 'simple_cnn'
  config.optim.name = 'adam'
  config.optim.learning_rate = 3e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_epochs = 1.0
  config.optim.weight_decay = 0.0
  config.train.batch_size = 64
  config.train.num_epochs = 15
  return config
