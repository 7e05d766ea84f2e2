"""PyTorch integration: differentiable losses wired into ``torch.autograd``.

Submodules: ``crossentropy.torch.distributed`` (vocab-parallel cross-entropy
over ``torch.distributed``).
"""
