"""Values cast to the element type of the pointer they are stored through."""
import triton
import triton.language as tl


@triton.jit
def to_element(value, ptr):
    # float64 reaches bfloat16 through float32. Triton 3.6's interpreter converts float64
    # to bfloat16 as an integer (the bits of int(value)), so the gradient of a bfloat16
    # prediction beside a float64 one (every task then accumulates in float64) came out
    # as zeros on CPU tensors. Compiled, the two roundings can differ from one in the
    # last bit of a bfloat16.
    ty = ptr.dtype.element_ty
    if value.dtype.is_fp64() and ty.is_bf16():
        return value.to(tl.float32).to(ty)
    return value.to(ty)
