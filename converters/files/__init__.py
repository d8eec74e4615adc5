"""Bytes in and out: PyTorch checkpoint readers (`checkpoint`), Keras files (`keras_files`), the
SavedModel check before loading (`savedmodel`), a TF.js model's files read with bounds
(`tfjs_files`), Keras 2 and TF.js models told by their markers (`foreign_formats`), atomic
outputs (`outputs`), where an output may go (`destinations`), and the guards every reader
shares (`guards`). Each guard is written once."""
