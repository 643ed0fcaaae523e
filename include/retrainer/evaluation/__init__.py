"""What evaluation reports beyond the streaming metrics: the metric by slice with intervals (``slices``)."""
