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
