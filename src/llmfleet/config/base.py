"""What every config section shares. It imports no other config module, so sections (model.py,
aws.py, ...) can all build on it without importing each other."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# EC2 instance families with NVIDIA GPUs that the GPU nodes' AMI and vLLM support; checked so
# a typo like "g4dn.xlrge" or a CPU type fails at config time instead of at launch, and so the
# edge is never a GPU type. No p3: its V100 (Volta) needs NVIDIA's proprietary driver, and the
# Deep Learning Base OSS Nvidia Driver AMI carries the open kernel modules (Turing and newer;
# the AMI's release notes list no P3), so a p3 node would boot without a usable GPU.
GPU_INSTANCE_FAMILIES = ("g4dn", "g5", "g6", "g6e", "gr6", "p4d", "p4de", "p5", "p5e")


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)
