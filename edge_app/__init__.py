"""agecheck edge app: camera -> faces -> ages -> tracks -> "check ID" alerts.

Importing this package never imports TensorFlow or Keras.
"""

__version__ = "0.1.0"
