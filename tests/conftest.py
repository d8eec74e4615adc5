import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import converters  # noqa: E402,F401  (imports TensorFlow quietly, before the tests do)
