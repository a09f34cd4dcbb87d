"""The TensorRT adapter every target shares: backends (TensorRT, TensorRT-RTX), parsed
networks and profiles, engine specs and builds, refit, failure diagnosis, the layer-writing
helper, and the rules (``trt.network``, ``trt.engine``, ``trt.refit``). TensorRT itself is
imported lazily, inside functions: importing this package imports no TensorRT."""
