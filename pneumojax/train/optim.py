"""The optimizer and learning-rate schedule of a run, from the `optim` section of the config."""

import collections

import jax
import jax.numpy as jnp
import optax

from pneumojax.models.head import HEAD

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'cosine', 'step')


def make_schedule(optim_config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 over `warmup_epochs`, then constant, cosine decay to 0, or step decay.

  'step' multiplies the rate by `step_factor` at each fraction `step_epochs` of the whole run (warmup included).
  """
  if optim_config.schedule not in SCHEDULES:
    raise ValueError(f'optim.schedule must be one of {SCHEDULES}, got {optim_config.schedule!r}')
  lr = optim_config.learning_rate
  warmup_steps = round(optim_config.warmup_epochs * steps_per_epoch)
  if optim_config.schedule == 'constant':
    main = optax.constant_schedule(lr)
  elif optim_config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay_steps=max(total_steps - warmup_steps, 1))
  else:
    # `main` counts steps from the end of warmup. A Counter, so boundaries that fall on one step all apply.
    boundaries = collections.Counter(int(f * total_steps) - warmup_steps for f in optim_config.step_epochs)
    main = optax.piecewise_constant_schedule(lr, {b: optim_config.step_factor**n for b, n in boundaries.items()})
  if not warmup_steps:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), main], [warmup_steps])


def _kernels(params):
  """Weight decay applies to kernels (ndim > 1), not to biases or BatchNorm scales and offsets."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def param_labels(params):
  """'head' for the parameters under params['head'], 'backbone' for all others."""
  if HEAD not in params:
    raise ValueError(f"optim.backbone_lr_factor and optim.backbone_frozen_epochs need a model whose classifier is "
                     f"params['{HEAD}'] (the pretrained-backbone families); this one has {sorted(params)}.")
  return {name: jax.tree.map(lambda _: 'head' if name == HEAD else 'backbone', subtree)
          for name, subtree in params.items()}


def make_optimizer(optim_config, steps_per_epoch: int, total_steps: int):
  """Returns (optax transformation, schedule); the schedule maps a step to its learning rate, for logging.

  Weight decay: decoupled for 'adamw' (Loshchilov & Hutter: the update subtracts lr * weight_decay * w);
  for 'adam' and 'sgd' it is L2 regularisation (weight_decay * w added to the gradient, as torch.optim's
  `weight_decay`), added only if weight_decay > 0. Gradients are clipped by global norm first if
  grad_clip_norm > 0.

  Fine-tuning: unless backbone_lr_factor is 1 and backbone_frozen_epochs 0, the head (params['head']) and the
  backbone get separate optimizers (`optax.multi_transform`; clipping then applies to each on its own). The
  backbone learns at backbone_lr_factor x the schedule, and not at all during its first backbone_frozen_epochs
  (head-then-unfreeze; Adam's moments of the backbone warm up meanwhile, its updates being 0). A factor of 0
  freezes it for the whole run, without optimizer state.
  """
  if optim_config.name not in OPTIMIZERS:
    raise ValueError(f'optim.name must be one of {OPTIMIZERS}, got {optim_config.name!r}')
  schedule = make_schedule(optim_config, steps_per_epoch, total_steps)
  tx = _optimizer(optim_config, schedule)
  factor, frozen_steps = optim_config.backbone_lr_factor, round(optim_config.backbone_frozen_epochs * steps_per_epoch)
  if factor == 1 and not frozen_steps:
    return tx, schedule
  if factor == 0:
    backbone_tx = optax.set_to_zero()
  else:
    backbone_tx = _optimizer(optim_config, lambda step: jnp.where(step < frozen_steps, 0.0, factor * schedule(step)))
  return optax.multi_transform({'head': tx, 'backbone': backbone_tx}, param_labels), schedule


def _optimizer(optim_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  name, weight_decay = optim_config.name, optim_config.weight_decay
  transforms = []
  if optim_config.grad_clip_norm > 0:
    transforms.append(optax.clip_by_global_norm(optim_config.grad_clip_norm))
  if weight_decay > 0 and name != 'adamw':
    transforms.append(optax.add_decayed_weights(weight_decay, mask=_kernels))
  if name == 'adamw':
    transforms.append(optax.adamw(schedule, weight_decay=weight_decay, mask=_kernels))
  elif name == 'adam':
    transforms.append(optax.adam(schedule))
  else:
    transforms.append(optax.sgd(schedule, momentum=optim_config.momentum or None))
  return optax.chain(*transforms)
