"""File formats trtcas reads and writes for rules (safetensors), and tensors in the CAS."""
