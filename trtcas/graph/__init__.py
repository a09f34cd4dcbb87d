"""The build engine: actions, keys, the DAG and its executor. Knows nothing about TensorRT."""
