"""Small pieces shared by the backbones."""

from __future__ import annotations


def conv_out(size: int, stride: int = 2, kernel: int = 3, padding: int = 1) -> int:
    """Output length of a convolution: floor((size + 2 padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def downsampled(input_size: tuple[int, int], times: int, **conv) -> tuple[int, int]:
    """(H, W) after ``times`` stride-2 3x3 convolutions with padding 1 (or as given)."""
    h, w = input_size
    for _ in range(times):
        h, w = conv_out(h, **conv), conv_out(w, **conv)
    return h, w
