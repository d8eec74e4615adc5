"""Deployed models: named intermediate outputs (`trace`), export to SavedModel and .tflite
(`export`), opening what others deployed (`artifacts`), the inputs both sides get (`inputs`), the
verification (`verify`), its result (`result`) and its HTML report (`report`)."""
