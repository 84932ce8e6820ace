"""Data: the TFDS builder of the Kermany chest X-ray set, its splits, and the tf.data input pipeline."""
