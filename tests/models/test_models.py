"""The multi-task network: shapes, dilation, ASPP rates, torchvision weights, a full round trip."""

import math

import pytest
import torch

from fastmtl.models import PRESETS, ResNet, build_model, scaled_rates

H, W = 37, 61  # odd on purpose: every stride-2 stage rounds up


def _finite_grads(module):
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_forward_backward_every_depth(depth):
    torch.manual_seed(0)
    model = build_model(depth, num_classes=19, width=4, resolution=(128, 256))
    x = torch.randn(2, 3, H, W)
    out = model(x)
    assert list(out) == ["semantic", "instance", "depth"]
    assert out["semantic"].shape == (2, 19, H, W)
    assert out["instance"].shape == (2, 2, H, W)
    assert out["depth"].shape == (2, 1, H, W)
    sum(o.square().mean() for o in out.values()).backward()
    _finite_grads(model)

    low = model(x, upsample=False)
    h8, w8 = math.ceil(H / 8), math.ceil(W / 8)
    assert {k: tuple(v.shape) for k, v in low.items()} == {
        "semantic": (2, 19, h8, w8), "instance": (2, 2, h8, w8), "depth": (2, 1, h8, w8)}


def test_output_stride_8_with_dilation_as_deeplab():
    enc = ResNet(50, base_width=4)
    assert enc(torch.randn(1, 3, 64, 96)).shape == (1, 4 * 8 * 4, 8, 12)
    for layer, dilation in ((enc.layer3, 2), (enc.layer4, 4)):
        assert all(b.conv2.stride == (1, 1) for b in layer)
        # torchvision's rule: the first block keeps the previous dilation.
        assert [b.conv2.dilation[0] for b in layer] == [dilation // 2] + [dilation] * (len(layer) - 1)
    assert enc.layer2[0].conv2.stride == (2, 2)


def test_aspp_rates_scale_with_resolution():
    assert scaled_rates((1024, 2048)) == (12, 24, 36)
    assert scaled_rates((512, 1024)) == (6, 12, 18)
    # 128x256: 12/8, 24/8, 36/8 = 1.5, 3, 4.5, rounded half up
    assert scaled_rates((128, 256)) == (2, 3, 5)
    assert scaled_rates((16, 32)) == (1, 1, 1)
    m = build_model("tiny")
    assert [b[0].dilation[0] for b in m.aspp.branches[1:]] == [2, 3, 5]


def test_task_subsets_and_presets():
    m = build_model("tiny", tasks=("depth", "semantic"), num_classes=7)
    x = torch.randn(1, 3, 32, 48)
    out = m(x)
    assert set(out) == {"semantic", "depth"} and out["semantic"].shape[1] == 7
    assert set(m(x, tasks=["depth"])) == {"depth"}
    with pytest.raises(ValueError, match="instance"):
        m(x, tasks=["instance"])
    with pytest.raises(ValueError, match="normals"):
        build_model("tiny", tasks=("normals",))
    with pytest.raises(ValueError, match="resnet"):
        build_model("resnet152")
    assert set(PRESETS) == {"tiny", "resnet18", "resnet34", "resnet50", "resnet101"}
    assert build_model("resnet50", width=4).encoder.depth == 50
    assert build_model(34, width=4).encoder.depth == 34


def torchvision_resnet_state(depth, width, seed=0):
    """The state dict torchvision's resnet{depth} would save, written out from
    torchvision's architecture (block types, counts, channels), random values."""
    bottleneck = depth >= 50
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    exp = 4 if bottleneck else 1
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g)

    def bn(name, c):
        state[f"{name}.weight"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.bias"] = torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = torch.randn(c, generator=g)
        state[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(7)

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    cin = width
    for i, n in enumerate(blocks):
        planes = width * 2**i
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            if bottleneck:
                conv(f"{p}.conv1", planes, cin, 1), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * 4, planes, 1), bn(f"{p}.bn3", planes * 4)
            else:
                conv(f"{p}.conv1", planes, cin, 3), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
            if j == 0 and (i > 0 or cin != planes * exp):
                conv(f"{p}.downsample.0", planes * exp, cin, 1), bn(f"{p}.downsample.1", planes * exp)
            cin = planes * exp
    state["fc.weight"] = torch.randn(1000, cin, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


@pytest.mark.parametrize("depth", [18, 50])
def test_load_torchvision_format_backbone(tmp_path, depth):
    state = torchvision_resnet_state(depth, width=4)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(state, path)
    model = build_model(depth, width=4, backbone=path)
    own = model.encoder.state_dict()
    assert set(own) == set(state) - {"fc.weight", "fc.bias"}
    for k, v in own.items():
        assert torch.equal(v, state[k]), k

    # Old torchvision checkpoints have no num_batches_tracked buffers.
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    build_model(depth, width=4).load_backbone(old)


def test_load_backbone_errors_name_the_keys(tmp_path):
    state = torchvision_resnet_state(18, width=4)
    model = build_model(18, width=4)
    broken = dict(state)
    del broken["layer2.0.downsample.0.weight"]
    broken["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"layer2\.0\.downsample\.0\.weight") as e:
        model.load_backbone(broken)
    assert "layer5.0.conv1.weight" in str(e.value)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight"):
        model.load_backbone(torchvision_resnet_state(18, width=8))  # shapes differ
    with pytest.raises(ValueError, match=r"unexpected keys \['layer1\.0\.conv3\.weight'"):
        model.load_backbone(torchvision_resnet_state(50, width=4))  # bottleneck keys in a basic-block net
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        model.load_backbone(tmp_path / "nowhere.pth")


def test_round_trip_synth_loader_model_loss(tmp_path):
    import fastmtl
    from fastmtl.data import Cityscapes, synth, transforms

    root = synth.generate(tmp_path / "city", n=2, n_val=1, seed=5, size=(64, 128))
    ds = Cityscapes(root, "train", size=None, transform=transforms.train_transform((48, 96), scale=(0.75, 1.25)))
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    torch.manual_seed(0)
    model = build_model("tiny", width=4, resolution=(64, 128))
    log_vars = torch.zeros(3, requires_grad=True)
    preds = model(batch["image"])
    targets = {k: batch[k] for k in ("semantic", "instance", "instance_mask", "depth")}
    out = fastmtl.multitask_loss(preds, targets, log_vars)
    assert torch.isfinite(out.total) and set(out.losses) == {"semantic", "instance", "depth"}
    out.total.backward()
    _finite_grads(model)
    assert torch.isfinite(log_vars.grad).all() and (log_vars.grad != 0).all()
