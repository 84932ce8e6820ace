"""The best recipe found on validation data: a linear probe on frozen multi-depth EfficientNet-Lite0 features.

  python -m pneumojax.weights ../shared/weights/efficientnet_lite0_imagenet_torch_layout.npz \\
      --model efficientnet_lite0 --out pretrained/efficientnet_lite0
  pneumojax train --config experiments/best.py --workdir runs/best --config.data.manual_dir=../shared/data/chest_xray

What it is: EfficientNet-Lite0's real ImageNet weights, frozen (BatchNorm with its running statistics); the pooled
outputs of MBConv blocks 5-15 and of conv_head concatenated (2,944 features: model.kwargs.feature_blocks); the
features of every train image and of 8 augmented views of it computed once (train.cached_views); a softmax head
trained on them, standardised (train.standardize_features), with Adam 3e-3, cosine decay, batch 256, 100 epochs
and an L2 penalty equivalent to a logistic regression's C = 0.3. The epoch with the best val_pd ROC-AUC is the
model; the threshold is chosen on val_pd by Youden's J. It was chosen on val_pd alone, with the test split switched
off (eval.evaluate_test=False): experiments/best/SEARCH.md lists what was tried and why this won.

Protocol: checkpoint and threshold chosen on val_pd (10% of the train patients, patient-disjoint); the official
624-image test split evaluated once, at the end. Like every trained run, the result is an ordinary whole-model
checkpoint: `pneumojax eval`, `predict` and `explain` take it.
"""

from pneumojax.config import default_config

FEATURE_BLOCKS = tuple(range(5, 17))  # MBConv blocks 5-15 and conv_head (16)
NUM_VIEWS = 8
C = 0.3  # the inverse L2 strength, as scikit-learn's LogisticRegression counts it


def get_config():
  config = default_config()
  config.data.resolution = 224
  config.data.channels = 3
  config.data.normalize = 'imagenet'
  config.data.augment = True  # for the cached views; the plain view and evaluation are not augmented
  config.model.name = 'efficientnet_lite0'
  config.model.kwargs = {'feature_blocks': FEATURE_BLOCKS}
  config.model.init_from = 'pretrained/efficientnet_lite0'
  config.model.freeze_batch_norm = True
  config.train.cached_features = True
  config.train.cached_views = NUM_VIEWS
  config.train.standardize_features = True
  config.train.batch_size = 256
  config.train.eval_batch_size = 128
  config.train.num_epochs = 100
  config.train.checkpoint_keep = 1
  config.optim.name = 'adam'
  config.optim.learning_rate = 3e-3
  config.optim.schedule = 'cosine'
  # sklearn's C * sum(loss) + |w|^2 / 2 per example is mean(loss) + |w|^2 / (2 C n); a two-logit softmax splits
  # the logistic weight w between its two columns, halving |w|^2: L2 gradient 2 w / (C n).
  config.optim.weight_decay = 2 / (C * (NUM_VIEWS + 1) * 4607)  # 4607 train_pd images
  config.eval.threshold_rule = 'youden'
  return config
