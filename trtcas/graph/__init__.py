"""The build engine: actions, keys, the DAG, the action runner and schedulers. Knows nothing about TensorRT."""
