"""The Core ML reference executor: ML programs run in numpy (see executor.py, kernels.py)."""
