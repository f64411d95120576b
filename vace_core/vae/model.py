"""The Wan2.1 causal 3D VAE (8x spatial, 4x temporal, 16 latent channels).

Module names and nesting follow the official Wan2.1 code, so its state dict (also ComfyUI's file) loads as is.
Time is causal: every temporal conv sees only past frames. Encoding runs in chunks of 1, 4, 4, ... frames and
decoding one latent frame at a time; a `cache` dict carries, for each temporal conv, the last frames it saw, so
chunked results equal a whole-clip causal pass while memory stays that of one chunk.
"""

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import VaceError
from .tiling import Tiling, auto_tiling, tile_windows

# Normalisation of the latent space (the DiT's input): z = (mu - mean) / std, per channel.
LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
SPATIAL_STRIDE = 8
TEMPORAL_STRIDE = 4

Cache = dict[nn.Module, Tensor | None]  # temporal conv -> the last frames it saw (None: saw the first chunk)


def causal_conv(conv: nn.Conv3d, x: Tensor, cache: Cache) -> Tensor:
    """Run `conv` (built with padding 0) padding time on the left only: with cached past frames, then zeros."""
    past = conv.kernel_size[0] - 1
    pad_h, pad_w = conv.kernel_size[1] // 2, conv.kernel_size[2] // 2
    if past:
        prev = cache.get(conv)
        if prev is not None:
            x = torch.cat([prev, x], dim=2)
        # clone: a view would keep the whole chunk alive until the next one
        cache[conv] = x[:, :, -past:].clone()
        past -= prev.shape[2] if prev is not None else 0
    return conv(F.pad(x, (pad_w, pad_w, pad_h, pad_h, past, 0)))


def run_layers(layers: nn.Sequential, x: Tensor, cache: Cache) -> Tensor:
    for layer in layers:
        if isinstance(layer, nn.Conv3d):
            x = causal_conv(layer, x, cache)
        elif isinstance(layer, CausalBlock):
            x = layer(x, cache)
        else:
            x = layer(x)
    return x


def per_frame(fn, x: Tensor) -> Tensor:
    """Apply a 2D module to every frame."""
    t = x.shape[2]
    return rearrange(fn(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", t=t)


class CausalBlock(nn.Module):
    """A block whose forward takes the causal cache."""


class RMSNorm(nn.Module):
    """Channel RMS norm (the official `RMS_norm`: L2-normalise over channels, times sqrt(dim) and gamma)."""

    def __init__(self, dim: int, spatial_dims: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * spatial_dims))

    def forward(self, x: Tensor) -> Tensor:
        # the sum of squares overflows in fp16: normalise in fp32; in place after that (activations dominate memory)
        return F.normalize(x.float(), dim=1).to(x.dtype).mul_(self.scale).mul_(self.gamma.to(x))


class ResidualBlock(CausalBlock):
    def __init__(self, in_dim: int, out_dim: int, ops=nn):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, 3), nn.SiLU(inplace=True), ops.Conv3d(in_dim, out_dim, 3),  # on the norm's fresh output
            RMSNorm(out_dim, 3), nn.SiLU(inplace=True),
            nn.Identity(),  # the official dropout slot: keeps `residual.6` at its index
            ops.Conv3d(out_dim, out_dim, 3),
        )
        self.shortcut = ops.Conv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        return run_layers(self.residual, x, cache) + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (middle blocks only)."""

    def __init__(self, dim: int, ops=nn):
        super().__init__()
        self.norm = RMSNorm(dim, 2)
        self.to_qkv = ops.Conv2d(dim, dim * 3, 1)
        self.proj = ops.Conv2d(dim, dim, 1)

    def attend(self, x: Tensor) -> Tensor:  # (bt, c, h, w)
        h = x.shape[2]
        q, k, v = (rearrange(a, "n c h w -> n 1 (h w) c") for a in self.to_qkv(self.norm(x)).chunk(3, dim=1))
        out = rearrange(F.scaled_dot_product_attention(q, k, v), "n 1 (h w) c -> n c h w", h=h)
        return self.proj(out)

    def forward(self, x: Tensor) -> Tensor:
        return x + per_frame(self.attend, x)


class Resample(CausalBlock):
    """2x spatial up/down sampling, plus 2x in time for the `3d` modes (a causal conv along time)."""

    def __init__(self, dim: int, mode: str, ops=nn):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          ops.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            # pad right/bottom only, so the stride-2 grid starts at the first pixel
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), ops.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = ops.Conv3d(dim, dim * 2, (3, 1, 1))  # each frame -> two frames
        elif mode == "downsample3d":
            self.time_conv = ops.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        if self.mode == "upsample3d":
            # the first latent frame stands for one video frame: it is not doubled, nor seen by later frames
            if self.time_conv in cache:
                x = rearrange(causal_conv(self.time_conv, x, cache), "b (two c) t h w -> b c (t two) h w", two=2)
            else:
                cache[self.time_conv] = None
        x = per_frame(self.resample, x)
        if self.mode == "downsample3d":
            # the first frame passes alone; later chunks are strided over with the previous chunk's last frame
            prev = cache.get(self.time_conv)
            cache[self.time_conv] = x[:, :, -1:].clone()
            if prev is not None:
                x = self.time_conv(torch.cat([prev, x], dim=2))
        return x


def middle(dim: int, ops) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim, ops), AttentionBlock(dim, ops), ResidualBlock(dim, dim, ops))


def head(dim: int, out_dim: int, ops) -> nn.Sequential:
    return nn.Sequential(RMSNorm(dim, 3), nn.SiLU(inplace=True), ops.Conv3d(dim, out_dim, 3))


class Encoder(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult: list[int], num_res_blocks: int,
                 temporal_downsample: list[bool], ops=nn):
        super().__init__()
        dims = [dim * m for m in [1, *dim_mult]]
        self.conv1 = ops.Conv3d(3, dims[0], 3)
        blocks = []
        for level, (in_dim, out_dim) in enumerate(pairwise(dims)):
            blocks += [ResidualBlock(in_dim if i == 0 else out_dim, out_dim, ops) for i in range(num_res_blocks)]
            if level < len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "downsample3d" if temporal_downsample[level] else "downsample2d", ops))
        self.downsamples = nn.Sequential(*blocks)
        self.middle = middle(dims[-1], ops)
        self.head = head(dims[-1], z_dim, ops)

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        x = causal_conv(self.conv1, x, cache)
        for layers in (self.downsamples, self.middle, self.head):
            x = run_layers(layers, x, cache)
        return x


class Decoder(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult: list[int], num_res_blocks: int,
                 temporal_upsample: list[bool], ops=nn):
        super().__init__()
        dims = [dim * m for m in [dim_mult[-1], *dim_mult[::-1]]]
        self.conv1 = ops.Conv3d(z_dim, dims[0], 3)
        self.middle = middle(dims[0], ops)
        blocks = []
        for level, (in_dim, out_dim) in enumerate(pairwise(dims)):
            in_dim = in_dim // 2 if level > 0 else in_dim  # each upsample's conv halves the channels
            blocks += [ResidualBlock(in_dim if i == 0 else out_dim, out_dim, ops) for i in range(num_res_blocks + 1)]
            if level < len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "upsample3d" if temporal_upsample[level] else "upsample2d", ops))
        self.upsamples = nn.Sequential(*blocks)
        self.head = head(dims[-1], 3, ops)

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        x = causal_conv(self.conv1, x, cache)
        for layers in (self.middle, self.upsamples, self.head):
            x = run_layers(layers, x, cache)
        return x


class WanVAE(nn.Module):
    """Video (B, 3, 1+4n, H, W) in [-1, 1] <-> normalised latent (B, 16, 1+n, H/8, W/8).

    `tiling`: None (whole frames), a `Tiling` (spatial tiles of at most `tile` px, blended over `overlap` px), or
    "auto" (the largest tile that fits the free memory of the input's device; whole frames when they fit).
    Outputs are float32 on the input's device.
    """

    def __init__(self, dim: int = 96, z_dim: int = 16, dim_mult: tuple[int, ...] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, temporal_downsample: tuple[bool, ...] = (False, True, True), operations=nn):
        super().__init__()
        self.config = dict(dim=dim, z_dim=z_dim, dim_mult=tuple(dim_mult), num_res_blocks=num_res_blocks,
                           temporal_downsample=tuple(temporal_downsample))
        self.z_dim = z_dim
        self.encoder = Encoder(dim, z_dim * 2, list(dim_mult), num_res_blocks, list(temporal_downsample), operations)
        self.conv1 = operations.Conv3d(z_dim * 2, z_dim * 2, 1)  # -> (mu, log_var); VACE uses mu
        self.conv2 = operations.Conv3d(z_dim, z_dim, 1)
        self.decoder = Decoder(dim, z_dim, list(dim_mult), num_res_blocks, list(temporal_downsample)[::-1], operations)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    def encode_chunks(self, video: Tensor):
        """Yield normalised latent chunks: frame 0 alone, then 4 frames -> 1 latent frame."""
        cache: Cache = {}
        starts = [0, *range(1, video.shape[2], TEMPORAL_STRIDE)]
        for start, end in pairwise([*starts, video.shape[2]]):
            mu = self.conv1(self.encoder(video[:, :, start:end].to(self.dtype), cache)).chunk(2, dim=1)[0]
            yield from_comfy_latent(mu)

    def decode_chunks(self, latent: Tensor):
        """Yield video chunks: latent frame 0 -> 1 frame, each later latent frame -> 4 frames."""
        cache: Cache = {}
        for t in range(latent.shape[2]):
            yield self.decoder(self.conv2(to_comfy_latent(latent[:, :, t:t + 1].to(self.dtype))), cache)

    @torch.no_grad()
    def encode(self, video: Tensor, tiling: Tiling | str | None = None) -> Tensor:
        check_video(video)
        b, _, t, h, w = video.shape
        out_shape = (b, self.z_dim, 1 + (t - 1) // TEMPORAL_STRIDE, h // SPATIAL_STRIDE, w // SPATIAL_STRIDE)
        tiling = resolve_tiling(tiling, self, video, out_shape, "encode")
        return run_tiled(self.encode_chunks, video, out_shape, tiling, in_scale=SPATIAL_STRIDE, out_scale=1)

    @torch.no_grad()
    def decode(self, latent: Tensor, tiling: Tiling | str | None = None) -> Tensor:
        check_latent(latent, self.z_dim)
        b, _, t, h, w = latent.shape
        out_shape = (b, 3, 1 + (t - 1) * TEMPORAL_STRIDE, h * SPATIAL_STRIDE, w * SPATIAL_STRIDE)
        tiling = resolve_tiling(tiling, self, latent, out_shape, "decode")
        video = run_tiled(self.decode_chunks, latent, out_shape, tiling, in_scale=1, out_scale=SPATIAL_STRIDE)
        return video.clamp_(-1.0, 1.0)


def latent_stats(like: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std, shaped (1, 16, 1, 1, 1) like `like`."""
    mean, std = (torch.tensor(v, device=like.device, dtype=like.dtype).view(1, -1, 1, 1, 1)
                 for v in (LATENTS_MEAN, LATENTS_STD))
    return mean, std


def to_comfy_latent(latent: Tensor) -> Tensor:
    """Normalised latent -> ComfyUI's LATENT (raw VAE space; ComfyUI's `latent_formats.Wan21` normalises it)."""
    mean, std = latent_stats(latent)
    return latent * std + mean


def from_comfy_latent(raw: Tensor) -> Tensor:
    """ComfyUI's LATENT (raw VAE space) -> the normalised latent that `decode` and the DiT take."""
    mean, std = latent_stats(raw)
    return (raw - mean) / std


def run_tiled(chunks, x: Tensor, out_shape: tuple[int, ...], tiling: Tiling | None, in_scale: int,
              out_scale: int) -> Tensor:
    """Run `chunks` (a causal chunk generator) on each spatial tile of x and blend the tiles into one output.

    in_scale / out_scale: input / output pixels per tiling unit (8 px). Tile after tile, so only one tile's
    activations and causal cache are alive at a time; the output is accumulated in place.
    """
    out = torch.zeros(out_shape, device=x.device, dtype=torch.float32)
    weight_sum = torch.zeros(out_shape[-2:], device=x.device, dtype=torch.float32)
    for window in tile_windows(x.shape[-2] // in_scale, x.shape[-1] // in_scale, tiling):
        (r0, r1), (c0, c1) = window.rows, window.cols
        rows, cols = slice(r0 * out_scale, r1 * out_scale), slice(c0 * out_scale, c1 * out_scale)
        weight = window.weight(out_scale).to(x.device)
        t = 0
        for chunk in chunks(x[..., r0 * in_scale:r1 * in_scale, c0 * in_scale:c1 * in_scale]):
            out[:, :, t:t + chunk.shape[2], rows, cols] += chunk.float() * weight
            t += chunk.shape[2]
        weight_sum[rows, cols] += weight
    return out.div_(weight_sum)


def check_video(video: Tensor) -> None:
    if video.ndim != 5 or video.shape[1] != 3:
        raise VaceError(f"VAE encode expects a video of shape (batch, 3, frames, height, width) in [-1, 1], "
                        f"got shape {tuple(video.shape)}: RGB only (drop alpha), channels before frames.")
    if video.numel() == 0:
        raise VaceError(f"VAE encode got an empty video of shape {tuple(video.shape)}.")
    check_frame_count(video.shape[2])
    h, w = video.shape[-2:]
    if h % SPATIAL_STRIDE or w % SPATIAL_STRIDE:
        raise VaceError(f"Video size {w}x{h} (WxH) is not a multiple of {SPATIAL_STRIDE}: resize or crop to "
                        f"{w // SPATIAL_STRIDE * SPATIAL_STRIDE}x{h // SPATIAL_STRIDE * SPATIAL_STRIDE} "
                        "(VACE itself needs multiples of 16).")


def check_frame_count(frames: int) -> None:
    """The one frame-count rule: 4n+1 frames (the VAE's causal 4x temporal stride), never silently trimmed."""
    if frames < 1 or (frames - 1) % TEMPORAL_STRIDE:
        lower = 1 + (frames - 1) // TEMPORAL_STRIDE * TEMPORAL_STRIDE if frames > 1 else 1
        raise VaceError(f"{frames} frames: the Wan VAE needs 4n+1 frames (1, 5, 9, ..., 81). "
                        f"Trim to {lower} or extend to {lower + TEMPORAL_STRIDE} frames.")


def check_latent(latent: Tensor, z_dim: int) -> None:
    if latent.ndim != 5 or latent.shape[1] != z_dim:
        raise VaceError(f"VAE decode expects a latent of shape (batch, {z_dim}, frames, height/8, width/8), "
                        f"got shape {tuple(latent.shape)}. Is it a Wan2.1 video latent?")
    if latent.numel() == 0:
        raise VaceError(f"VAE decode got an empty latent of shape {tuple(latent.shape)}.")


def resolve_tiling(tiling: Tiling | str | None, vae: WanVAE, x: Tensor, out_shape: tuple[int, ...],
                   mode: str) -> Tiling | None:
    if tiling == "auto":
        frame_px = out_shape[-2:] if mode == "decode" else x.shape[-2:]
        return auto_tiling(vae.config, frame_px, math.prod(out_shape) * 4, vae.dtype, x.device, mode)
    if tiling is None or isinstance(tiling, Tiling):
        return tiling
    raise VaceError(f"tiling must be None, 'auto' or a Tiling(tile=..., overlap=...), got {tiling!r}")
