"""LLM targets: Hugging Face or TensorRT-LLM checkpoints -> per-rank networks and engines.

``hf`` reads HF checkpoints, ``checkpoint`` TensorRT-LLM ones, ``convert`` turns the first
into the second rank by rank (per tensor), ``planner`` plans a target's actions, and each
architecture lives in its own folder, registered in ``architectures.ARCHITECTURES``.
"""
