"""Memory of one training step, estimated without allocating it, and the memory a device has free.

The backbone runs once on the meta device (shapes only, no data) for one sample; every leaf module's
output is counted. Estimate of a step with batch B, in bytes:

    1.5 x B x (leaf outputs per sample)    activations kept for backward, and the gradients flowing back
    + 4 x parameters                       weights, their gradients, AdamW's two moments
    + 4 x B x (input + target per sample)  the batch, the task's normalised copy and extra channels

Calibrated on CPU against measured peaks of forward + backward + AdamW steps (U-net and ViT peaks are
1.25-1.4 x their leaf outputs). Sizes are float32, so under bf16-mixed this overestimates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATION_FACTOR = 1.5  # measured peak / leaf outputs, rounded up (see above)
OPTIMIZER_COPIES = 4  # weights, gradients, AdamW exp_avg and exp_avg_sq


@dataclass(frozen=True)
class StepMemory:
    """Bytes of one training step, split into what grows with the batch and what does not."""

    activations_per_sample: int  # sum of leaf-module outputs for one sample
    sample_bytes: int  # one input crop and its target
    parameter_bytes: int

    def total(self, batch_size: int) -> int:
        per_sample = ACTIVATION_FACTOR * self.activations_per_sample + 4 * self.sample_bytes
        return int(batch_size * per_sample + OPTIMIZER_COPIES * self.parameter_bytes)

    def largest_batch(self, budget: int) -> int:
        """The largest batch size whose step fits in ``budget`` bytes (0 if not even one sample)."""
        per_sample = ACTIVATION_FACTOR * self.activations_per_sample + 4 * self.sample_bytes
        return max(0, int((budget - OPTIMIZER_COPIES * self.parameter_bytes) // per_sample))


def leaf_output_bytes(net: nn.Module, input_size: int) -> int:
    """Bytes of all leaf-module outputs of ``net`` for one (1, C, n, n, n) input, by a meta-device forward.

    ``net`` follows the backbone convention: ``in_channels`` attribute, ``forward(x)`` or, with
    ``num_summaries`` > 0, ``forward(x, summaries)``. Its parameters are moved to the meta device (its
    memory is released), so pass a model built for this purpose. Raises what the forward raises.
    """
    net = net.to("meta").eval()  # eval: batch norm takes a batch of one; the shapes are those of training
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        summaries = int(getattr(net, "num_summaries", 0) or 0)
        with torch.no_grad():
            if not getattr(net, "takes_field", True):  # summary-only backbones (models/summary_mlp.py)
                net(torch.empty(1, summaries, device="meta"))
                return total
            x = torch.empty(1, int(net.in_channels), input_size, input_size, input_size, device="meta")
            net(x, torch.empty(1, summaries, device="meta")) if summaries else net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def available_bytes(device: torch.device) -> int:
    """Free memory of a CUDA device, or the host's available memory (Linux MemAvailable) for the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
