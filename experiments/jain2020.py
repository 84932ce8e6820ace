"""Jain et al., Measurement 165 (2020) 108046: two small CNNs and four ImageNet transfer-learning models.

  pneumojax train --config experiments/jain2020.py:model1 --workdir runs/jain2020_model1 \\
      --config.data.manual_dir=../shared/data/chest_xray

ARG: model1 (the default), model2, vgg16, vgg19, resnet50 or inception_v3. Test accuracies as usually cited
from the paper: Model 1 85.26%, Model 2 92.31%, VGG16 87.28%, VGG19 88.46%, ResNet50 77.56%, InceptionV3
70.99%.

What is known of the paper here: Model 1 has two convolutional layers and Model 2 three; the other four are
ImageNet-pretrained backbones with a new classifier. Its layer tables, input size, optimizer, learning rate,
batch size, epochs, augmentation and fine-tuning schedule could not be consulted: every one of those below is
our choice, stated so that the run is reproducible, not a claim about the paper (see also
pneumojax/models/simple_cnn.py for the assumed layers of Models 1 and 2).

Our choices: 224 px input for all six (our stored copy's own size); the light augmentation of the default
config; Adam 1e-3 with cosine decay, batch 32, 20 epochs, no class weighting; the best epoch by val_pd ROC-AUC.
Models 1 and 2 train from scratch on 1-channel images scaled to [0, 1] (as Keras' `rescale=1/255`). The
transfer models start from `model.init_from` (pretrained/<name>, converted with `python -m pneumojax.weights`
from the Keras applications `*_notop.h5` files) with the backbone frozen (optim.backbone_lr_factor=0, BatchNorm
statistics frozen) and a 256-unit relu head with dropout 0.5 trained on top, on 3-channel input normalised as
the weights expect; fine-tune instead with `--config.optim.backbone_lr_factor=0.1`.

Deviations: the ImageNet weights of VGG16/19, ResNet50 and InceptionV3 could not be had offline here, so those
four rows run only where a user converts the weight files. Our images are a third-party 224 px copy (squashed,
re-encoded JPEG); InceptionV3 at 224 px instead of its native 299. Validation is val_pd (10% of the train
patients, patient-disjoint), not the official 16-image val split. A CPU check: `--config.train.num_steps=20`.
"""

from pneumojax.config import default_config

# arg -> (model name, model kwargs, normalisation, init_from)
MODELS = {
    'model1': ('jain_model1', {}, 'unit', None),
    'model2': ('jain_model2', {}, 'unit', None),
    'vgg16': ('vgg16', {'hidden': (256,), 'dropout_rate': 0.5}, 'caffe', 'pretrained/vgg16'),
    'vgg19': ('vgg19', {'hidden': (256,), 'dropout_rate': 0.5}, 'caffe', 'pretrained/vgg19'),
    'resnet50': ('resnet50', {'variant': 'keras', 'hidden': (256,), 'dropout_rate': 0.5}, 'caffe',
                 'pretrained/resnet50'),
    'inception_v3': ('inception_v3', {'hidden': (256,), 'dropout_rate': 0.5}, 'symmetric', 'pretrained/inception_v3'),
}


def get_config(arg: str = 'model1'):
  if arg not in MODELS:
    raise ValueError(f'jain2020.py:MODEL with MODEL in {sorted(MODELS)}; got {arg!r}.')
  name, kwargs, normalize, init_from = MODELS[arg]
  config = default_config()
  config.data.resolution = 224
  config.data.normalize = normalize
  config.model.name = name
  config.model.kwargs = kwargs
  if init_from:  # An ImageNet backbone: frozen, with its BatchNorm statistics; the head trains.
    config.data.channels = 3
    config.model.init_from = init_from
    config.model.freeze_batch_norm = True
    config.optim.backbone_lr_factor = 0.0
  config.optim.name = 'adam'
  config.optim.learning_rate = 1e-3
  config.optim.schedule = 'cosine'
  config.train.batch_size = 32
  config.train.num_epochs = 20
  return config
