"""Bytes in and out: PyTorch checkpoint readers (`checkpoint`), Keras files (`keras_files`), the
SavedModel check before loading (`savedmodel`), atomic outputs (`outputs`), where an output may go
(`destinations`), and the guards every reader shares (`guards`). Each guard is written once."""
