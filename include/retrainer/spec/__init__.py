"""What a model is asked to do: the data contract, objectives, metrics, the model spec."""
