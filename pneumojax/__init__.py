"""pneumojax: pneumonia detection on chest X-rays with JAX, Flax, optax, TFDS, Orbax and CLU.

`pneumojax.load_run(workdir)` opens a trained run (pneumojax/api.py); the API is imported on first use, so that
`import pneumojax` stays cheap (no TensorFlow or JAX).
"""

__version__ = "0.1.0"
_API = ('load_run', 'TrainedRun', 'Predictions')


def __getattr__(name):  # PEP 562: a lazy re-export of the API.
  if name in _API:
    from pneumojax import api
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
