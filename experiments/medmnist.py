"""The MedMNIST v2 PneumoniaMNIST benchmark (Yang et al., Scientific Data 2023) and MedMNIST+ (Doerrich et al.
2024): ResNets trained from scratch on centre-cropped, downscaled films.

  pneumojax train --config experiments/medmnist.py:28,resnet18 --workdir runs/medmnist_28_resnet18 \\
      --config.data.manual_dir=../shared/data/chest_xray

ARG = RESOLUTION[,MODEL]: RESOLUTION 28, 64, 128 or 224 (default 28); MODEL resnet18 (default) or resnet50.

MedMNIST v2's training (as published): ResNet-18 / ResNet-50 from scratch, cross-entropy, Adam with learning
rate 1e-3, batch 128, 100 epochs, the learning rate multiplied by 0.1 after 50% and 75% of the epochs, no
augmentation, the model with the best validation AUC evaluated on the test set. PneumoniaMNIST test results
(624 images): ResNet-18 (28) accuracy 85.4%, AUC 94.4%; ResNet-50 (28) 85.4%, 94.8%. MedMNIST+ (224 px
images, several training schemes): best end-to-end ResNet-18 accuracy 91.1%, AUC 98.0%; its training recipe
differs from v2's and is not reproduced by this config (which keeps v2's at every resolution).

Our settings: exactly those hyperparameters (optim 'adam' 1e-3, schedule 'step' at (0.5, 0.75) x 0.1, batch 128,
100 epochs, no weight decay, no augmentation, checkpoint by best validation AUC after every epoch), grayscale
input scaled to [-1, 1] (MedMNIST normalises with mean 0.5, sd 0.5), images centre-cropped to the short edge
and resized (data.resize='crop', as MedMNIST built its images). At 28 px the ResNet stem is one 3x3 stride-1
convolution without max pooling (small_stem; assumed to match MedMNIST's 28 px ResNets, whose code was not
consulted here); 64 px and larger use the standard 7x7/2 stem and max pooling.

Deviations: PneumoniaMNIST carves its validation split (524 images) at random from the official train split
(4,708 remain for training); we use val_pd, 10% of the train *patients* (609 images, patient-disjoint;
train_pd 4,607), the closest split pneumojax has. Our source images are a third-party 224 px squashed copy
(aspect ratio already lost), so the "crop" is a crop of a squashed film and 224 px is not a native resolution;
MedMNIST cropped and resized the original, larger films. For a CPU check: `--config.train.num_epochs=2`.
"""

from pneumojax.config import default_config

RESOLUTIONS = (28, 64, 128, 224)
MODELS = ('resnet18', 'resnet50')


def get_config(arg: str = '28,resnet18'):
  resolution, model = (arg.split(',') + ['resnet18'])[:2]
  if not resolution.isdigit() or int(resolution) not in RESOLUTIONS or model not in MODELS:
    raise ValueError(f'medmnist.py:RESOLUTION[,MODEL] with RESOLUTION in {RESOLUTIONS} and MODEL in {MODELS}; '
                     f'got {arg!r}.')
  config = default_config()
  config.data.resolution = int(resolution)
  config.data.resize = 'crop'
  config.data.channels = 1
  config.data.normalize = 'symmetric'
  config.data.augment = False
  config.model.name = model
  config.model.kwargs = {'small_stem': int(resolution) == 28}
  config.optim.name = 'adam'
  config.optim.learning_rate = 1e-3
  config.optim.schedule = 'step'
  config.optim.step_epochs = (0.5, 0.75)
  config.optim.step_factor = 0.1
  config.optim.weight_decay = 0.0
  config.train.batch_size = 128
  config.train.num_epochs = 100
  return config
