"""The default run configuration that every `experiments/*.py` config starts from.

A run is fully described by its config plus the code version; the loop saves the resolved config in the workdir.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  data.data_dir = placeholder(str)    # prepared TFDS files; unset: $PNEUMOJAX_DATA_DIR, then the TFDS default.
  data.manual_dir = placeholder(str)  # the downloaded zip or extracted folder; unset: $PNEUMOJAX_MANUAL_DIR.
  data.archive = placeholder(str)     # which zip in manual_dir to read, when it holds several.
  data.skip_unreadable = False # True: leave out undecodable files (listed in the report) instead of failing.
  data.resolution = 128        # stored resolution: one TFDS builder config per value (64, 128, 224, 299).
  data.resize = 'squash'       # 'squash' (as the papers) or 'crop' (centre crop to the short edge, as MedMNIST).
  data.image_size = 0          # model input size; 0 means the stored resolution.
  data.channels = 1            # 1 for grayscale models, 3 for ImageNet backbones.
  data.train_split = 'train_pd'  # official train minus the patient-disjoint validation patients.
  data.val_split = 'val_pd'      # patient-disjoint validation carved from official train.
  data.test_split = 'test'       # the official 624-image test set.
  data.val_fraction = 0.1      # fraction of train patients that form val_pd, stratified by class.
  data.val_seed = 0            # seed of that carve-out (independent of the training seed).
  data.normalize = 'symmetric' # 'symmetric' ([-1, 1]), 'unit' ([0, 1]) or 'imagenet' (per-channel mean/std).
  data.augment = True          # random resized crop + small rotation + brightness/contrast (data/augment.py).
  data.crop_scale_min = 0.75   # smallest crop, as a fraction of the image area.
  data.crop_max_aspect = 1.15  # crop aspect ratios within [1/x, x].
  data.rotation_degrees = 10.0
  data.brightness = 0.1        # added to pixels in [0, 1], uniformly in [-x, x].
  data.contrast = 0.1          # contrast factor uniformly in [1 - x, 1 + x].
  data.hflip = False           # off: a flipped chest film is anatomically implausible (see data/augment.py).
  data.class_balance = 'none'  # 'none', 'weights' (class-weighted loss) or 'oversample'.

  config.model = model = ml_collections.ConfigDict()
  model.name = 'simple_cnn'
  model.num_classes = 2
  model.dtype = 'float32'      # compute dtype; 'bfloat16' keeps float32 parameters.
  model.kwargs = ml_collections.ConfigDict()  # extra constructor arguments of the model.

  config.optim = optim = ml_collections.ConfigDict()
  optim.name = 'adam'          # 'adam', 'adamw' or 'sgd' (with momentum).
  optim.learning_rate = 1e-3
  optim.schedule = 'cosine'    # 'constant', 'cosine' or 'step'.
  optim.warmup_epochs = 0.0
  optim.step_epochs = (0.5, 0.75)  # 'step' schedule: boundaries as fractions of the run.
  optim.step_factor = 0.1
  optim.weight_decay = 0.0
  optim.momentum = 0.9
  optim.grad_clip_norm = 0.0   # 0 disables clipping.

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 64        # global batch, split over devices and processes.
  train.eval_batch_size = 256
  train.num_epochs = 10
  train.num_steps = -1         # >0 overrides num_epochs.
  train.parallel = 'jit'       # 'jit' (jax.jit over jax.shard_map) or 'pmap'.
  train.log_every_steps = 20
  train.eval_every_steps = 0   # validation (and a checkpoint) every this many steps; 0: every epoch.
  train.checkpoint_keep = 2    # latest checkpoints kept (the best-by-val-AUC one is always kept too).
  return config
