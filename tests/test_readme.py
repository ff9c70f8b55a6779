"""The README's usage section runs as written, the way a user pastes it."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def usage_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Usage\n"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_usage_section_runs_as_written(capsys):
    blocks = usage_blocks()
    assert len(blocks) >= 3
    namespace = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    # What the snippets claim: decay only on the network, a plain cross-entropy for segmentation
    # alone, and the functional form agreeing with the module.
    groups = namespace["optimizer"].param_groups
    assert groups[1]["params"] == [namespace["criterion"].weighting.log_vars] and groups[1]["weight_decay"] == 0.0
    model, images, targets = namespace["model"], namespace["images"], namespace["targets"]
    with torch.no_grad():
        logits = model(images)["semantic"]
        seg = namespace["seg_loss"]({"semantic": logits}, targets).total
        torch.testing.assert_close(seg, torch.nn.functional.cross_entropy(logits, targets["semantic"],
                                                                          ignore_index=255))
        module = namespace["criterion"](model(images), targets).total
        torch.testing.assert_close(namespace["out"].total.detach(), module)
    assert targets["instance_mask"].sum() == 2 * 20 * 30
    assert "semantic" in capsys.readouterr().out  # the sigmas were printed
