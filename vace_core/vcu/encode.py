"""Context tokenisation: a VCU -> the DiT's 96-channel context latent (DESIGN.md §5).

Concept decoupling splits the frames into inactive F x (1 - M) (kept) and reactive F x M (to change); each
is VAE-encoded (16 + 16 channels). References are encoded one by one as 1-frame videos, never mixed with
video frames, and go first along time with zero reactive and mask channels. The mask becomes 64 channels,
one per offset in the VAE's 8x8 pixel cell, resized in time to the latent length (nearest-exact).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..vae.model import SPATIAL_STRIDE
from .unit import VCU


def decouple(vcu: VCU) -> tuple[Tensor, Tensor]:
    """(inactive, reactive) frames, each (3, T, H, W): what is kept and what the model may change."""
    return vcu.frames * (1 - vcu.masks), vcu.frames * vcu.masks


def tokenise_masks(masks: Tensor, latent_frames: int) -> Tensor:
    """(T, H, W) -> (64, T_lat, H/8, W/8): channel py*8+px holds pixel (py, px) of each 8x8 cell."""
    cells = rearrange(masks, "t (h py) (w px) -> (py px) t h w", py=SPATIAL_STRIDE, px=SPATIAL_STRIDE)
    return F.interpolate(cells[None], size=(latent_frames, *cells.shape[2:]), mode="nearest-exact")[0]


def encode_vcu(vcu: VCU, vae_encode: Callable[[Tensor], Tensor]) -> Tensor:
    """VCU -> (96, T_lat + n_refs, H/8, W/8) context latent.

    vae_encode maps a (1, 3, T, H, W) video in [-1, 1] to its normalised latent (1, 16, T_lat, H/8, W/8).
    """
    inactive, reactive = (vae_encode(part[None])[0] for part in decouple(vcu))
    video = torch.cat([inactive, reactive])  # (32, T_lat, h, w)
    masks = tokenise_masks(vcu.masks.to(video), video.shape[1])
    refs = [vae_encode(ref[None, :, None].to(video))[0] for ref in vcu.references]  # each (16, 1, h, w)
    refs = [torch.cat([z, torch.zeros_like(z)]) for z in refs]
    ref_masks = masks.new_zeros(masks.shape[0], len(refs), *masks.shape[2:])
    return torch.cat([torch.cat([*refs, video], dim=1), torch.cat([ref_masks, masks], dim=1)])
