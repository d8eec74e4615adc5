"""The key tables, pure data and string rules: how each published layout names a ConvNeXt's
tensors (`layouts`), how Keras variable paths map to PyTorch keys (`mapping`), and what
transformers' config.json says (`hf`). No framework is imported here."""
