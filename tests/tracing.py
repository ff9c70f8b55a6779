"""torch.compile tracing of the ops without a GPU: graphs recorded, kernels never launched."""


class _Target:
    """A CUDA sm_90 target for Triton's front end when no GPU driver is present: lets
    torch's mutation analysis compile the kernels to TTIR, as it does on a GPU."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0


def _stand_in(gm, boxed):
    """A callable returning zeros shaped like the graph's outputs: the kernels never run."""
    import torch

    (outputs,) = [n.args[0] for n in gm.graph.nodes if n.op == "output"]

    def value(node):
        if not hasattr(node, "meta"):
            return node
        val = node.meta.get("val", node.meta.get("example_value"))
        return torch.zeros(val.shape, dtype=val.dtype) if isinstance(val, torch.Tensor) else val

    def run(args):
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(value(v) for v in outputs)
        return value(outputs)

    if boxed:  # AOTAutograd's calling convention: one list of arguments
        run._boxed_call = True
        return run
    return lambda *args: run(list(args))


def kernels_of(gm):
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    calls = [n for n in gm.graph.nodes
             if n.op == "call_function" and "triton_kernel_wrapper" in str(n.target)]
    return [(kernel_side_table.get_kernel(n.kwargs["kernel_idx"]).fn.__name__, n) for n in calls]


def trace_graphs(step, *args) -> tuple[dict, list, list]:
    """Trace ``step(*args)`` with torch.compile(fullgraph=True) without launching a kernel.

    Returns a report with the number of Dynamo graphs and the first one's code,
    plus the AOTAutograd forward and backward graphs of a run followed by
    ``total.backward()`` (``step`` returns ``(total, ...)``).
    """
    import torch
    import triton
    from torch._dynamo.backends.common import aot_autograd

    triton.runtime.driver.set_active(_Target())
    graphs = []

    def recorder(gm, example_inputs):
        graphs.append(gm)
        return _stand_in(gm, boxed=False)

    torch.compile(step, fullgraph=True, backend=recorder)(*args)
    report = dict(graphs=len(graphs), dynamo_graph=graphs[0].code)
    torch._dynamo.reset()
    fw, bw = [], []

    def compiler(store):
        def compile_graph(gm, example_inputs):
            store.append(gm)
            return _stand_in(gm, boxed=True)
        return compile_graph

    compiled = torch.compile(step, fullgraph=True, backend=aot_autograd(
        fw_compiler=compiler(fw), bw_compiler=compiler(bw)))
    total, *_ = compiled(*args)
    total.backward()
    report["forward_kernels"] = [name for name, _ in kernels_of(fw[0])]
    report["backward_kernels"] = [name for name, _ in kernels_of(bw[0])]
    return report, fw, bw
