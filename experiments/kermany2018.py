"""Kermany et al., Cell 172(5) 2018: ImageNet features of a frozen CNN, a softmax retrained on them.

  pneumojax train --config experiments/kermany2018.py:mobilenet_v2,binary --workdir runs/kermany2018_mnv2 \\
      --config.data.manual_dir=../shared/data/chest_xray

ARG = BACKBONE[,TASK]. BACKBONE: inception_v3 (the paper's; the default), mobilenet_v2 (alpha 0.35) or
efficientnet_lite0. TASK: binary (normal vs pneumonia; the default) or bacteria_vs_virus (the pneumonia images
only). The backbone's weights come from `model.init_from`, an Orbax checkpoint made by `python -m
pneumojax.weights` (README, "Reproducing the papers"): pretrained/inception_v3, pretrained/mobilenet_v2_035 or
pretrained/efficientnet_lite0, relative to the directory the command runs in.

Paper: InceptionV3 pretrained on ImageNet, its convolutional layers frozen, the final softmax layer retrained
("transfer learning"); reported on the 624 test images: normal vs pneumonia accuracy 92.8%, sensitivity 93.2%,
specificity 90.1%, AUC 96.8%; bacterial vs viral 90.7%, 88.6%, 90.9%, 94.0%. Their model was chosen by
evaluating the test set during training: here that protocol is only the separately labelled `test_selected`
entry of results.json (eval.report_test_selected, on by default in this config); the headline `test` entry
is the epoch chosen on validation data.

Our choices where the paper's settings were not at hand here (its optimizer, learning rate, batch size and
epochs of the softmax training were not consulted): the features are computed once (train.cached_features),
then the softmax trains with Adam 1e-3, cosine decay, batch 128, 50 epochs, no class weighting; the best
epoch by val_pd ROC-AUC is kept. Training a linear layer on cached features is cheap; the backbone's pass over
the 5.8k images (train_pd, val_pd, and test for the test-selected report) and a whole-model checkpoint per epoch are
most of a run's time. For a quick CPU check use `--config.train.num_epochs=5`.

Deviations: InceptionV3's ImageNet weights could not be had offline, so the paper's backbone runs here only
where a user converts them (`inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`); mobilenet_v2 (alpha
0.35, Keras) and efficientnet_lite0 (a PyTorch port) are real ImageNet weights in ../shared/weights, smaller
backbones than the paper's. Our images are a third-party copy resized to 224 px (squashed, re-encoded JPEG):
InceptionV3's 299 px input is upsampled from it. The grayscale film is repeated to 3 channels. Validation is
val_pd (10% of the train patients, patient-disjoint), not the test set.
"""

from pneumojax.config import default_config

# backbone -> (model kwargs, input size, normalisation its weights expect, init_from)
BACKBONES = {
    'inception_v3': ({}, 299, 'symmetric', 'pretrained/inception_v3'),
    'mobilenet_v2': ({'alpha': 0.35}, 224, 'symmetric', 'pretrained/mobilenet_v2_035'),
    'efficientnet_lite0': ({}, 224, 'imagenet', 'pretrained/efficientnet_lite0'),
}
TASKS = ('binary', 'bacteria_vs_virus')


def get_config(arg: str = 'inception_v3,binary'):
  backbone, task = (arg.split(',') + ['binary'])[:2]
  if backbone not in BACKBONES or task not in TASKS:
    raise ValueError(f'kermany2018.py:BACKBONE[,TASK] with BACKBONE in {sorted(BACKBONES)} and TASK in {TASKS}; '
                     f'got {arg!r}.')
  kwargs, resolution, normalize, init_from = BACKBONES[backbone]
  config = default_config()
  config.data.resolution = resolution
  config.data.channels = 3
  config.data.normalize = normalize
  config.data.augment = False  # The features are computed once, from the plain images.
  config.data.task = task
  config.model.name = backbone
  config.model.kwargs = kwargs
  config.model.init_from = init_from
  config.model.freeze_batch_norm = True
  config.train.cached_features = True
  config.optim.name = 'adam'
  config.optim.learning_rate = 1e-3
  config.optim.schedule = 'cosine'
  config.train.batch_size = 128
  config.train.num_epochs = 50
  config.train.checkpoint_keep = 1
  config.eval.report_test_selected = True  # Kermany et al.'s protocol, beside (not instead of) the headline.
  return config
