"""pneumojax: pneumonia detection on chest X-rays with JAX, Flax, optax, TFDS, Orbax and CLU."""

__version__ = "0.1.0"
