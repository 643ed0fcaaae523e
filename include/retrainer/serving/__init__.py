"""The SavedModel as served: the MLflow pyfunc wrapper and the fresh-process check."""
