"""sparseguidance: token-sparse diffusion transformers and Sparse Guidance (arXiv 2601.01608)."""

__version__ = "0.1.0"
