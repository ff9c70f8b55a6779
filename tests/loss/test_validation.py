"""Every bad input raises ValueError or TypeError naming the problem."""
import pytest
import torch

import fastmtl
from helpers import make_inputs


def call(pred, tgt, **kw):
    return fastmtl.multitask_loss(pred, tgt, **kw)


def test_unknown_task_name():
    pred, tgt = make_inputs()
    pred["normals"] = pred.pop("depth")
    with pytest.raises(ValueError, match="unknown task name.*normals"):
        call(pred, tgt)


def test_empty_predictions():
    with pytest.raises(ValueError, match="no task given"):
        call({}, {})


def test_predictions_not_a_dict():
    with pytest.raises(TypeError, match="predictions must be a dict"):
        call([torch.zeros(1)], {})


@pytest.mark.parametrize("key", ["semantic", "instance", "instance_mask", "depth"])
def test_missing_target(key):
    pred, tgt = make_inputs()
    del tgt[key]
    with pytest.raises(ValueError, match=f"missing target '{key}'"):
        call(pred, tgt)


def test_batch_mismatch_between_predictions():
    pred, tgt = make_inputs(B=2)
    pred["depth"] = pred["depth"][:1]
    with pytest.raises(ValueError, match="batch and H x W must agree"):
        call(pred, tgt)


def test_spatial_mismatch_with_target():
    pred, tgt = make_inputs(H=4, W=6)
    tgt["semantic"] = tgt["semantic"][:, :, :5]
    with pytest.raises(ValueError, match=r"targets\['semantic'\] has shape \(2, 4, 5\), expected \(2, 4, 6\)"):
        call(pred, tgt)


@pytest.mark.parametrize("name,channels", [("instance", 3), ("depth", 2)])
def test_wrong_channel_count(name, channels):
    pred, tgt = make_inputs()
    B, _, H, W = pred[name].shape
    pred[name] = torch.zeros(B, channels, H, W)
    with pytest.raises(ValueError, match=f"predictions\\['{name}'\\] has {channels} channels, expected"):
        call(pred, tgt)


def test_prediction_not_4d():
    pred, tgt = make_inputs()
    pred["semantic"] = pred["semantic"][0]
    with pytest.raises(ValueError, match="must be 4-d"):
        call(pred, tgt)


def test_integer_prediction():
    pred, tgt = make_inputs()
    pred["depth"] = pred["depth"].long()
    with pytest.raises(TypeError, match=r"predictions\['depth'\] has dtype torch.int64"):
        call(pred, tgt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.int16])
def test_semantic_target_dtype(dtype):
    pred, tgt = make_inputs()
    tgt["semantic"] = tgt["semantic"].to(dtype)
    with pytest.raises(TypeError, match="integer class labels"):
        call(pred, tgt)


@pytest.mark.parametrize("bad", [5, 19, -1, 254])
def test_label_out_of_range(bad):
    pred, tgt = make_inputs(C=5)
    tgt["semantic"][1, 2, 3] = bad
    with pytest.raises(ValueError, match=f"label {bad} outside \\[0, 5\\)"):
        call(pred, tgt)


def test_label_check_can_be_turned_off_and_then_ignores():
    pred, tgt = make_inputs(C=5, seed=1)
    bad = {**tgt, "semantic": tgt["semantic"].clone()}
    bad["semantic"][0, 0, 0] = 7
    ignored = {**tgt, "semantic": tgt["semantic"].clone()}
    ignored["semantic"][0, 0, 0] = 255
    a = call(pred, bad, check_labels=False)
    b = call(pred, ignored)
    assert a.total.item() == b.total.item()


def test_custom_ignore_index():
    pred, tgt = make_inputs(C=5, ignore_index=-100, ignore_frac=0.3)
    assert (tgt["semantic"] == -100).any()
    with pytest.raises(ValueError, match="label -100 outside"):
        call(pred, tgt)
    assert torch.isfinite(call(pred, tgt, ignore_index=-100).total)


def test_instance_mask_must_be_bool():
    pred, tgt = make_inputs()
    tgt["instance_mask"] = tgt["instance_mask"].float()
    with pytest.raises(TypeError, match="instance_mask'\\] must be a bool"):
        call(pred, tgt)


def test_instance_target_shape():
    pred, tgt = make_inputs()
    tgt["instance"] = tgt["instance"][:, :1]
    with pytest.raises(ValueError, match=r"targets\['instance'\] has shape"):
        call(pred, tgt)


def test_depth_target_shape():
    pred, tgt = make_inputs()
    tgt["depth"] = tgt["depth"].expand(-1, 2, -1, -1)
    with pytest.raises(ValueError, match=r"targets\['depth'\] has shape"):
        call(pred, tgt)


def test_integer_depth_target():
    pred, tgt = make_inputs()
    tgt["depth"] = tgt["depth"].long()
    with pytest.raises(TypeError, match=r"targets\['depth'\] must be a floating-point"):
        call(pred, tgt)


@pytest.mark.parametrize("n", [2, 4])
def test_log_vars_length(n):
    pred, tgt = make_inputs()
    with pytest.raises(ValueError, match="log_vars has shape .* 3 task"):
        call(pred, tgt, log_vars=torch.zeros(n))


def test_log_vars_and_weights_together():
    pred, tgt = make_inputs()
    with pytest.raises(ValueError, match="either log_vars .* or weights"):
        call(pred, tgt, log_vars=torch.zeros(3), weights=[1, 1, 1])


def test_weights_length_and_names():
    pred, tgt = make_inputs()
    with pytest.raises(ValueError, match="weights has shape"):
        call(pred, tgt, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="weights has no entry for task.*depth"):
        call(pred, tgt, weights={"semantic": 1.0, "instance": 1.0})
    with pytest.raises(ValueError, match="unknown task.*normals"):
        call(pred, tgt, weights={"semantic": 1, "instance": 1, "depth": 1, "normals": 1})


def test_class_weight_shape_and_dtype():
    pred, tgt = make_inputs(C=5)
    with pytest.raises(ValueError, match=r"class_weight has shape \(4,\), expected \(5,\)"):
        call(pred, tgt, class_weight=torch.ones(4))
    with pytest.raises(TypeError, match="class_weight must be a floating-point"):
        call(pred, tgt, class_weight=torch.ones(5, dtype=torch.long))


def test_unknown_backend():
    pred, tgt = make_inputs()
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        call(pred, tgt, backend="cuda")


def test_module_without_log_var_for_task():
    pred, tgt = make_inputs()
    crit = fastmtl.MultiTaskLoss(tasks=("semantic", "depth"))
    with pytest.raises(ValueError, match="no log-variance for task.*instance"):
        crit(pred, tgt)


# --- class_weight and ignore_index, the same on both backends (F.cross_entropy is the oracle) ---

BACKENDS = ["reference", "triton"]


def _semantic(C=5, target_dtype=torch.int64, seed=0):
    pred, tgt = make_inputs(C=C, tasks=("semantic",), target_dtype=target_dtype, seed=seed)
    return pred, tgt


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weight, match", [
    ([float("nan"), 1, 1, 1, 1], "be finite, got nan for class 0"),
    ([1, 1, float("inf"), 1, 1], "be finite, got inf for class 2"),
    ([-1.0] * 5, "be >= 0, got -1.0 for class 0"),
    ([1, 1, 1, -0.5, 1], "be >= 0, got -0.5 for class 3"),
    ([0.0] * 5, "have a positive sum"),
])
def test_class_weight_values(backend, weight, match):
    pred, tgt = _semantic()
    with pytest.raises(ValueError, match=r"class_weight must " + match):
        call(pred, tgt, class_weight=torch.tensor(weight), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_weight_with_zeros_matches_cross_entropy(backend):
    pred, tgt = _semantic(seed=3)
    w = torch.tensor([0.0, 2.0, 0.5, 0.0, 1.0])
    out = call(pred, tgt, class_weight=w, backend=backend)
    expected = torch.nn.functional.cross_entropy(pred["semantic"], tgt["semantic"], weight=w, ignore_index=255)
    torch.testing.assert_close(out.losses["semantic"], expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value, match", [
    (1.5, "must be an int, got float 1.5"),
    (True, "must be an int, got bool True"),
    (None, "must be an int, got None"),
    ("255", "must be an int, got str"),
])
def test_ignore_index_must_be_an_int(backend, value, match):
    # F.cross_entropy refuses them too: "argument 'ignore_index' must be int, not float".
    pred, tgt = _semantic()
    with pytest.raises(TypeError, match=match):
        call(pred, tgt, ignore_index=value, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, value", [(torch.uint8, -100), (torch.uint8, -1), (torch.uint8, 256),
                                          (torch.int32, 2**31), (torch.int32, -2**31 - 1)])
def test_ignore_index_the_labels_cannot_hold(backend, dtype, value):
    # A uint8 label compared with -100 would wrap to 156: the check must not depend on that.
    pred, tgt = _semantic(target_dtype=dtype)
    with pytest.raises(ValueError, match=rf"ignore_index={value} cannot occur in {dtype} labels"):
        call(pred, tgt, ignore_index=value, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_narrow_labels_with_ignore_index_in_range(backend, dtype):
    import numpy as np

    pred, tgt = _semantic(target_dtype=dtype, seed=5)
    out = call(pred, tgt, ignore_index=np.int64(255), backend=backend)  # any integral type
    expected = torch.nn.functional.cross_entropy(pred["semantic"], tgt["semantic"].long(), ignore_index=255)
    torch.testing.assert_close(out.losses["semantic"], expected)


def test_bad_label_156_in_uint8_is_reported_not_ignored():
    pred, tgt = _semantic(target_dtype=torch.uint8)
    tgt["semantic"][0, 0, 0] = 156
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="label 156 outside"):
            call(pred, tgt, backend=backend)


# --- MultiTaskLoss checks its arguments when it is built ---

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(backend="cuda"), ValueError, "unknown backend 'cuda'"),
    (dict(upsample="nearest"), ValueError, "unknown upsample mode 'nearest'"),
    (dict(ignore_index=None), TypeError, "ignore_index must be an int, got None"),
    (dict(ignore_index=2.0), TypeError, "ignore_index must be an int"),
    (dict(class_weight=torch.tensor([1.0, float("nan")])), ValueError, "class_weight must be finite"),
    (dict(class_weight=-torch.ones(3)), ValueError, "class_weight must be >= 0"),
    (dict(class_weight=torch.ones(2, 2)), ValueError, r"class_weight has shape \(2, 2\)"),
    (dict(class_weight=[1.0, 2.0]), TypeError, "class_weight must be a torch.Tensor"),
    (dict(check_labels="yes"), TypeError, "check_labels must be True or False"),
    (dict(align_corners=1), TypeError, "align_corners must be True or False"),
    (dict(weighting="uncertainty"), TypeError, "weighting must be a fastmtl weighting"),
    (dict(tasks=("semantic", "normals")), ValueError, "unknown task name"),
])
def test_module_checks_arguments_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastmtl.MultiTaskLoss(**kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fixed_weighting_without_a_weight_for_a_predicted_task(backend):
    pred, tgt = make_inputs()
    crit = fastmtl.MultiTaskLoss(weighting=fastmtl.FixedWeighting({"depth": 1.0}), backend=backend)
    with pytest.raises(ValueError, match=r"no weight for task\(s\) \['semantic', 'instance'\]"):
        crit(pred, tgt)
    with pytest.raises(ValueError, match=r"no weight for task\(s\) \['semantic'\]"):
        fastmtl.FixedWeighting({"depth": 1.0})({"semantic": torch.tensor(1.0), "depth": torch.tensor(2.0)})


def test_fixed_weighting_refuses_non_finite_weights():
    with pytest.raises(ValueError, match="must be finite"):
        fastmtl.FixedWeighting({"semantic": float("nan"), "depth": 1.0})


def test_class_weight_values_are_read_once_per_tensor_and_again_after_a_change(monkeypatch):
    from fastmtl import validation

    reads = []
    real_to = torch.Tensor.to
    pred, tgt = _semantic()
    w = torch.ones(5)
    def to(self, *args, **kwargs):
        if args[:1] == ("cpu",):  # a read back to the host
            reads.append(tuple(self.shape))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    for _ in range(3):
        call(pred, tgt, class_weight=w)
    assert reads == [(5,)]
    w[2] = float("nan")  # an in-place change is checked again
    with pytest.raises(ValueError, match="finite, got nan for class 2"):
        call(pred, tgt, class_weight=w)
    assert not validation._already_checked(w)
