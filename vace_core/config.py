"""The DiT's shape. Detected from checkpoint weights (never from file names)."""

from dataclasses import dataclass

WAN_HEAD_DIM = 128  # every released Wan2.1 model; tiny test models may differ (pass num_heads)


@dataclass(frozen=True)
class VaceConfig:
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    vace_layers: tuple[int, ...] = tuple(range(0, 30, 2))  # context blocks inject after these
    in_dim: int = 16
    out_dim: int = 16
    vace_in_dim: int = 96  # 16 inactive + 16 reactive latent channels + 64 mask channels
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if not self.vace_layers or self.vace_layers[0] != 0:
            raise ValueError(f"vace_layers must start at 0 (context block 0 reads x0), got {self.vace_layers}")
        if max(self.vace_layers) >= self.num_layers or len(set(self.vace_layers)) != len(self.vace_layers):
            raise ValueError(f"vace_layers {self.vace_layers} must be distinct blocks of 0..{self.num_layers - 1}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


VACE_1_3B = VaceConfig()
VACE_14B = VaceConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, vace_layers=tuple(range(0, 40, 5)))
