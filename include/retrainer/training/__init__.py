"""TensorFlow: the model, the input pipeline, strategies, the training loop, workers, launchers, baselines."""
