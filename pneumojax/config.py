"""The run configuration: the default config that every `experiments/*.py` config starts from, the command line's
`--config FILE --config.a.b=value` parsed into a config, and the comparison of a saved run's config with a new one.

A run is fully described by its config plus the code version; training saves the resolved config in the workdir.
"""

import copy
import json

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_dict import placeholder

# Where the data lives, not what it is: these may differ between two runs of the same config.
DATA_LOCATION_FIELDS = ('data.data_dir', 'data.manual_dir', 'data.archive')
# Fields of configs saved by earlier versions that the code now derives: ignored when a saved config is read.
RETIRED_FIELDS = ('model.num_classes',)  # From data.task (data/tasks.py).


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
  data.channels = 1            # 1 for grayscale models, 3 for ImageNet backbones (the gray image repeated); 1 with
                               # a 3-channel model.init_from sums its first kernel over the input channels instead.
  data.train_split = 'train_pd'  # official train minus the patient-disjoint validation patients.
  data.val_split = 'val_pd'      # patient-disjoint validation carved from official train.
  data.test_split = 'test'       # the official 624-image test set.
  data.val_fraction = 0.1      # fraction of train patients that form val_pd, stratified by class.
  data.val_seed = 0            # seed of that carve-out (independent of the training seed).
  data.normalize = 'symmetric' # 'symmetric' ([-1, 1]), 'unit' ([0, 1]), 'imagenet' (mean/std) or 'caffe' (Keras VGG).
  data.augment = True          # random resized crop + small rotation + brightness/contrast (data/augment.py).
  data.crop_scale_min = 0.75   # smallest crop, as a fraction of the image area.
  data.crop_max_aspect = 1.15  # crop aspect ratios within [1/x, x].
  data.rotation_degrees = 10.0
  data.brightness = 0.1        # added to pixels in [0, 1], uniformly in [-x, x].
  data.contrast = 0.1          # contrast factor uniformly in [1 - x, 1 + x].
  data.hflip = False           # off: a flipped chest film is anatomically implausible (see data/augment.py).
  data.class_balance = 'none'  # 'none', 'weights' (class-weighted loss) or 'oversample'.
  data.task = 'binary'         # 'binary', 'three_class' or 'bacteria_vs_virus' (data/tasks.py): sets the model's
                               # number of classes.
  # Splits whose uint8 images fit this many MiB are held on every device, their batches made and augmented inside
  # the jitted step (data/device.py); larger ones, or 0, are read through the tf.data pipeline.
  data.device_memory_mb = 1024

  config.model = model = ml_collections.ConfigDict()
  model.name = 'simple_cnn'
  model.dtype = 'float32'      # compute dtype; 'bfloat16' keeps float32 parameters.
  # The conv, BatchNorm and max pooling implementations (models/layers.py): 'flax', 'xla_cpu' (the same results,
  # faster on XLA:CPU) or 'auto' (xla_cpu when JAX's default backend is the CPU).
  model.layers = 'auto'
  model.kwargs = ml_collections.ConfigDict()  # extra constructor arguments of the model.
  # Pretrained weights: an Orbax checkpoint from `python -m pneumojax.weights` (pneumojax/weights). Every variable
  # but the head (freshly initialised for the task) starts from it.
  model.init_from = placeholder(str)
  model.freeze_batch_norm = False  # True: BatchNorm normalises with, and keeps, its running statistics in training.

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
  # Fine-tuning a pretrained backbone (models with params['head']; see train/optim.py): the backbone learns at
  # backbone_lr_factor x learning_rate (0: frozen, only the head trains), after backbone_frozen_epochs of
  # head-only training (head-then-unfreeze).
  optim.backbone_lr_factor = 1.0
  optim.backbone_frozen_epochs = 0.0

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 64        # global batch, split over devices and processes.
  train.eval_batch_size = 256
  train.num_epochs = 10
  train.num_steps = -1         # >0 overrides num_epochs.
  train.parallel = 'jit'       # 'jit' (jax.jit over jax.shard_map) or 'pmap'.
  train.log_every_steps = 20
  # Training steps per dispatch (lax.scan) with the data on the devices; 0: 1 on CPU, log_every_steps elsewhere.
  train.steps_per_dispatch = 0
  train.eval_every_steps = 0   # validation (and a checkpoint) every this many steps; 0: every epoch.
  train.checkpoint_keep = 2    # latest checkpoints kept (the best-by-val-AUC one is always kept too).
  # True: Kermany et al.'s transfer learning: the frozen backbone's features computed once, then only the head
  # trained on them, for num_epochs (train/linear_probe.py). Set model.init_from.
  train.cached_features = False
  # With cached_features: augmented views (data.augment's distributions) of each train image cached besides the
  # plain one; the head trains on all of them, every epoch.
  train.cached_views = 0
  # With cached_features: the head trains on features standardised by their train mean and sd (an
  # ill-conditioned probe otherwise learns slowly), folded into its first layer, so checkpoints are plain models.
  train.standardize_features = False

  config.distributed = distributed = ml_collections.ConfigDict()  # see pneumojax/train/distributed.py
  distributed.initialize = False          # True: call jax.distributed.initialize (several processes).
  distributed.coordinator_address = placeholder(str)  # 'host:port' of process 0; unset: detected on clusters.
  distributed.num_processes = 0           # 0: detected.
  distributed.process_id = -1             # -1: detected.
  distributed.cpu_collectives = 'gloo'    # collectives between CPU processes.
  distributed.cpu_devices = 0             # JAX devices per process on a CPU host; 0: chosen (see there).

  config.eval = evaluation = ml_collections.ConfigDict()
  # The operating threshold of two-class tasks, chosen on the validation split (never on test): 'youden' (the
  # highest threshold maximising sensitivity + specificity - 1, i.e. balanced accuracy) or 'sensitivity' (the
  # highest threshold whose sensitivity reaches target_sensitivity: a screening operating point). 'youden' by
  # default: it needs no per-task target, so it is fixed before any test is seen and fits every two-class task;
  # sensitivity >= 0.95 of the positive class (virus) gave 46.9% test accuracy on bacteria_vs_virus.
  evaluation.threshold_rule = 'youden'
  evaluation.target_sensitivity = 0.95  # for threshold_rule='sensitivity'
  evaluation.bootstrap_samples = 1000  # resamples of patients for the 95% confidence intervals.
  evaluation.bootstrap_seed = 0
  # False: the run never reads the test split, and results.json holds validation metrics only (`val`, and
  # `val_at_val_threshold` at the threshold chosen on those same outputs): search recipes this way, then evaluate
  # the test split once, for the recipe chosen, with True (the same fine-tuning command resumes at its last step
  # and only evaluates). May change on resume: it is applied after training.
  evaluation.evaluate_test = True
  # True: also evaluate the test split at every validation evaluation and add `test_selected` to results.json,
  # the metrics of the evaluation with the best *test* AUC (Kermany et al.'s protocol; optimistic, labelled as
  # such). The headline `test` entry stays the checkpoint chosen on validation (train/test_history.py). Needs
  # evaluate_test.
  evaluation.report_test_selected = False
  return config


def load_config(config_args: list[str]) -> ml_collections.ConfigDict:
  """`--config FILE[:ARG]` plus `--config.a.b=value` overrides, parsed by ml_collections (types checked)."""
  argv = ['pneumojax'] + config_args
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'an experiments/*.py config file', flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  try:
    flag_values(argv)
    config = flag_values.config
    if config is not None:
      config.get('seed')  # ml_collections defers an unreadable file's OSError to the config's first use: here.
  except (flags.Error, AttributeError, KeyError, TypeError, OSError, SyntaxError) as e:  # a bad field, value or file
    raise SystemExit(f'pneumojax: bad --config: {_one_line(e)}') from None
  if config is None:
    raise SystemExit('pneumojax: --config FILE is required, e.g. --config experiments/quickstart.py')
  return config


def _one_line(error: Exception) -> str:
  """The gist of a config error: ml_collections reports an unreadable file over several lines."""
  if isinstance(error, SyntaxError):
    return f'{error.filename}, line {error.lineno}: {error.msg}'
  if isinstance(error, OSError):  # ml_collections' own error wraps the file's: its last line names the cause
    return str(error.__cause__ or error).strip().splitlines()[-1].strip()
  return str(error)


def flatten(tree: dict, prefix: str = '') -> dict:
  """{'a.b': value} of a nested dict {'a': {'b': value}}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def without_retired(saved: dict) -> dict:
  """A saved config (a plain dict, from a checkpoint or results.json) without the RETIRED_FIELDS."""
  saved = copy.deepcopy(saved)
  for field in RETIRED_FIELDS:
    *parents, name = field.split('.')
    node = saved
    for key in parents:
      node = node.get(key, {})
    node.pop(name, None)
  return saved


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """The config of a saved run: today's defaults with the saved values laid over them.

  A field added since the run was saved takes its default; a retired one (RETIRED_FIELDS) is left out.
  """
  config = default_config()
  config.update(without_retired(saved))
  return config


def differences(saved: dict, requested: ml_collections.ConfigDict) -> dict[str, tuple]:
  """{dotted field: (saved value, requested value)} of every field that differs between two configs.

  `saved` (a plain dict) is laid over today's defaults: a field added since it was saved counts as its default,
  and a retired one is ignored. Values compare as JSON (tuples as lists); a field missing from either side is
  'absent' there.
  """
  flat_saved = {**flatten(json.loads(default_config().to_json())), **flatten(without_retired(saved))}
  flat_requested = flatten(json.loads(requested.to_json()))
  pairs = {field: (flat_saved.get(field, 'absent'), flat_requested.get(field, 'absent'))
           for field in sorted(flat_saved.keys() | flat_requested.keys())}
  return {field: pair for field, pair in pairs.items() if pair[0] != pair[1]}
