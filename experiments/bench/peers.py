"""The same models in Keras (tf.keras) and PyTorch, timed like `pneumojax.bench`: benchmark-only peers.

Neither framework is a dependency of pneumojax: `pip install torch==2.13.0` (CPU) for the PyTorch rows; Keras
comes with tensorflow. Models, as pneumojax's (same layers, shapes and parameter counts):

- simple_cnn: four [3x3 conv (no bias) -> BatchNorm -> relu -> 2x2 max pool] blocks of 16-32-64-128 filters,
  global average pooling, dropout 0.5, dense 2.
- resnet18: torchvision's ResNet-18 (basic blocks), written out here (torchvision is not installed with torch).
- resnet50: Keras: `keras.applications.ResNet50` (v1, stride in the 1x1 convolution, biases), compared with
  pneumojax's `resnet50(variant='keras')`; PyTorch: torchvision's ResNet-50 (v1.5), written out here, compared
  with pneumojax's default `resnet50`.

Each step is one optimizer step of Adam on softmax cross-entropy over one fixed synthetic batch (float32).
"""

import functools
import time

import numpy as np

from pneumojax.bench import timed_windows

WIDTHS = (16, 32, 64, 128)
RESNET_STAGES = {'resnet18': (2, 2, 2, 2), 'resnet50': (3, 4, 6, 3)}


# Keras ------------------------------------------------------------------------------------------------------

def keras_model(name: str, size: int, channels: int):
  import keras
  from keras import layers
  inputs = keras.Input((size, size, channels))
  if name == 'resnet50':
    return keras.applications.ResNet50(weights=None, input_tensor=inputs, classes=2, classifier_activation=None)
  x = inputs
  if name == 'simple_cnn':
    for width in WIDTHS:
      x = layers.Conv2D(width, 3, padding='same', use_bias=False)(x)
      x = layers.ReLU()(layers.BatchNormalization()(x))
      x = layers.MaxPool2D()(x)
    x = layers.Dropout(0.5)(layers.GlobalAveragePooling2D()(x))
  elif name == 'resnet18':
    def bn_relu(y, relu=True):
      y = layers.BatchNormalization(epsilon=1e-5)(y)
      return layers.ReLU()(y) if relu else y
    x = bn_relu(layers.Conv2D(64, 7, 2, padding='same', use_bias=False)(x))
    x = layers.MaxPool2D(3, 2, padding='same')(x)
    for stage, blocks in enumerate(RESNET_STAGES[name]):
      for block in range(blocks):
        stride = 2 if stage and not block else 1
        width = 64 * 2**stage
        y = bn_relu(layers.Conv2D(width, 3, stride, padding='same', use_bias=False)(x))
        y = bn_relu(layers.Conv2D(width, 3, padding='same', use_bias=False)(y), relu=False)
        if stride != 1 or x.shape[-1] != width:
          x = bn_relu(layers.Conv2D(width, 1, stride, use_bias=False)(x), relu=False)
        x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
  else:
    raise ValueError(f'no Keras peer for {name!r}')
  return keras.Model(inputs, layers.Dense(2)(x))


def keras_speed(name: str, size: int, batch_size: int, channels: int = 1, windows: int = 5, steps: int = 5,
                warmup: int = 2) -> dict:
  import keras
  import tensorflow as tf
  model = keras_model(name, size, channels)
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch_size, size, size, channels)).astype(np.float32)
  y = rng.integers(0, 2, batch_size).astype(np.int32)
  start = time.perf_counter()
  model.train_on_batch(x, y)
  first_s = time.perf_counter() - start
  for _ in range(warmup):
    model.train_on_batch(x, y)
  train = timed_windows(lambda k: [model.train_on_batch(x, y) for _ in range(k)], windows, steps)
  predict = tf.function(lambda x: model(x, training=False))
  predict(x)
  evaluate = timed_windows(lambda k: [predict(x).numpy() for _ in range(k)], windows, steps)
  return _row('keras ' + keras.__version__, first_s, train, evaluate, batch_size, steps,
              sum(int(np.prod(w.shape)) for w in model.trainable_weights))


# PyTorch ----------------------------------------------------------------------------------------------------

def torch_model(name: str, channels: int):
  from torch import nn

  def conv_bn(cin, cout, kernel, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)

  class Block(nn.Module):
    def __init__(self, cin, width, stride, bottleneck):
      super().__init__()
      cout = width * 4 if bottleneck else width
      if bottleneck:  # torchvision v1.5: the stride in the 3x3 convolution
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride),
                                  conv_bn(width, cout, 1, relu=False))
      else:
        self.body = nn.Sequential(conv_bn(cin, width, 3, stride), conv_bn(width, width, 3, relu=False))
      self.shortcut = (conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout
                       else nn.Identity())
      self.out_channels = cout

    def forward(self, x):
      return (self.body(x) + self.shortcut(x)).relu()

  if name == 'simple_cnn':
    layers, cin = [], channels
    for width in WIDTHS:
      layers += [conv_bn(cin, width, 3), nn.MaxPool2d(2)]
      cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(cin, 2))
  if name not in RESNET_STAGES:
    raise ValueError(f'no PyTorch peer for {name!r}')
  layers, cin = [conv_bn(channels, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
  for stage, blocks in enumerate(RESNET_STAGES[name]):
    for block in range(blocks):
      layers.append(Block(cin, 64 * 2**stage, 2 if stage and not block else 1, name == 'resnet50'))
      cin = layers[-1].out_channels
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 2))


def torch_speed(name: str, size: int, batch_size: int, channels: int = 1, windows: int = 5, steps: int = 5,
                warmup: int = 2, device: str = 'cpu', dtype: str = 'float32') -> dict:
  """On 'cuda': channels-last tensors, and bfloat16 autocast for dtype 'bfloat16' (float32 parameters)."""
  import torch
  layout = torch.channels_last if device == 'cuda' else torch.contiguous_format
  model = torch_model(name, channels).to(device, memory_format=layout)
  optimizer = torch.optim.Adam(model.parameters(), 1e-3)
  loss_fn = torch.nn.CrossEntropyLoss()
  generator = torch.Generator().manual_seed(0)
  x = torch.randn(batch_size, channels, size, size, generator=generator).to(device, memory_format=layout)
  y = torch.randint(0, 2, (batch_size,), generator=generator).to(device)
  autocast = functools.partial(torch.autocast, device, torch.bfloat16, enabled=dtype == 'bfloat16')

  def train(num_steps):
    model.train()
    for _ in range(num_steps):
      optimizer.zero_grad(set_to_none=True)
      with autocast():
        loss = loss_fn(model(x), y)
      loss.backward()
      optimizer.step()
    loss.item()  # waits for the device

  def evaluate(num_steps):
    model.eval()
    with torch.inference_mode(), autocast():
      for _ in range(num_steps):
        model(x).float().cpu()

  first_s = timed_windows(train, 1, 1)[0]
  train(warmup)
  train_s = timed_windows(train, windows, steps)
  evaluate(1)
  return _row(f'pytorch {torch.__version__}', first_s, train_s, timed_windows(evaluate, windows, steps), batch_size,
              steps, sum(p.numel() for p in model.parameters() if p.requires_grad))


def _row(framework, first_s, train_s, eval_s, batch_size, steps, params) -> dict:
  train = [steps * batch_size / s for s in train_s]
  evaluate = [steps * batch_size / s for s in eval_s]
  return dict(framework=framework, first_step_s=first_s, train_ips=float(np.median(train)),
              train_ips_min=min(train), train_ips_max=max(train), eval_ips=float(np.median(evaluate)),
              params=params)
