"""Test session setup.

The Triton kernels run on CPU tensors through Triton's interpreter, which
Triton reads when ``@triton.jit`` decorates, so it is set before fastmtl is
imported. ``TRITON_INTERPRET=0 pytest -m cuda`` runs the compiled kernels on a GPU.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
