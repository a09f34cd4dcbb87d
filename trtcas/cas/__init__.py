"""Storage: bytes and digests. Knows nothing about TensorRT or actions' meaning."""
