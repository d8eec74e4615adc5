"""Which model a checkpoint is (`identify`), and its tensors onto models, strictly: every
tensor accounted for (`convert`, `keras_applications`), written in each target format
(`targets`)."""
