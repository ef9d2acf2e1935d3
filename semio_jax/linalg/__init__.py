"""Numerical kernels on arrays and structured operators: GTH, M-matrix certificates, Krylov solvers,
functional graphs, sharded products. No knowledge of models or reports."""
