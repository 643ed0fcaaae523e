"""The SavedModel as served: the MLflow pyfunc wrapper, the scorer evaluation uses, and the fresh-process check."""
