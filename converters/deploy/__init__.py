"""Deployed models: named intermediate outputs (`trace`), export to SavedModel and .tflite
(`export`, joined from pieces by `tflite_join`), opening what others deployed (`artifacts`), the
inputs both sides get (`inputs`), the PyTorch models an artifact is compared against
(`references`), where a foreign artifact's blocks are (`locate`), the verification (`verify`),
what to suspect after it (`hints`), its result (`result`) and its HTML report (`report`)."""
