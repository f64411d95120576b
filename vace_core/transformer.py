"""The Wan2.1 DiT with VACE context blocks.

Precision follows the reference: the residual stream, time embedding, modulation, norms, patch embedding
and head run in float32; attention, FFN and text projections run in the compute dtype (the dtype of the
input latent `x`). Layers come from `operations` (default `torch.nn`, which needs a uniform fp32 model):
pass cast layers (`vace_core.ops` or ComfyUI's `comfy.ops`) to store weights in another dtype (bf16, fp8).

State-dict keys are the official Wan layout (see DESIGN.md §4), so checkpoints load without renaming.
"""

import math
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from .attention import attention, block_bias, resolve_backend
from .config import VaceConfig
from .denoiser import narrow_bias
from .errors import VaceError
from .layer_skip import SkipRows
from .rope import apply_rope, rope_angles, rope_cos_sin, upcast


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Timestep embedding (B,) -> (B, dim), cos first, computed in float64 like the reference."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float64) / half)
    angles = torch.outer(t.double(), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


@dataclass
class Tokens:
    """One forward's inputs as tokens. x, x0 (B, L, dim) fp32: residual stream and patch-embedded latent;
    streams: (B, L, dim) fp32 per VACE context stream; e (B, 6, dim) and t_emb (B, dim) fp32 time embeddings;
    text (B, 512, dim) in the compute dtype; rope = (cos, sin) each (1, L, 1, head_dim/2); grid (T, H, W)."""

    x: torch.Tensor
    x0: torch.Tensor
    streams: list
    e: torch.Tensor
    t_emb: torch.Tensor
    text: torch.Tensor
    rope: tuple
    grid: tuple


def token_scale(scale, grid: tuple):
    """A stream's strength: a number (kept), or one per latent frame (T,) -> (1, T*h*w, 1) over the tokens."""
    if not isinstance(scale, torch.Tensor) or scale.ndim != 1:
        return scale
    _, h, w = grid
    return repeat(scale, "t -> 1 (t hw) 1", hw=h * w)


class Attention(nn.Module):
    """Self- or cross-attention with RMS-normalised q/k (over all heads)."""

    def __init__(self, dim, num_heads, eps, ops, factory, backend):
        super().__init__()
        self.num_heads, self.backend = num_heads, backend
        self.attend = attention  # sequence parallelism swaps in its own for self-attention (vace_core.distributed)
        self.q, self.k, self.v, self.o = (ops.Linear(dim, dim, **factory) for _ in range(4))
        self.norm_q = ops.RMSNorm(dim, eps=eps, elementwise_affine=True, **factory)
        self.norm_k = ops.RMSNorm(dim, eps=eps, elementwise_affine=True, **factory)

    def _rms(self, norm, x):  # norm in fp32, back to the compute dtype
        return norm(upcast(x)).to(x.dtype)

    def forward(self, x, context=None, rope=None, bias=None):
        """x (B, L, dim) in compute dtype; context (B, Lc, dim) for cross-attention; rope = (cos, sin)."""
        kv = x if context is None else context
        q, k = self._rms(self.norm_q, self.q(x)), self._rms(self.norm_k, self.k(kv))
        q, k, v = (rearrange(t, "b l (h d) -> b l h d", h=self.num_heads) for t in (q, k, self.v(kv)))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.o(self.attend(q, k, v, self.backend, bias))


def modulation(rows: int, dim: int, factory: dict) -> nn.Parameter:
    """(1, rows, dim) shift/scale/gate table, random as in the reference's init. On the meta device (a model
    waiting for its file's weights) it stays empty: meta randn runs Python reference kernels whose first call
    costs seconds of imports."""
    if torch.device(factory["device"] or "cpu").type == "meta":
        return nn.Parameter(torch.empty(1, rows, dim, **factory))
    return nn.Parameter(torch.randn(1, rows, dim, **factory) / dim**0.5)


class WanBlock(nn.Module):
    """One DiT block: modulated self-attention, cross-attention to text, modulated FFN.

    `lean` (inference only, set by `vace_core.speed`): modulation and residual adds in place or fused
    (torch.addcmul), so no fp32 copies of the branch outputs, and the FFN runs `ffn_chunk` tokens at a time
    (0: all) writing into the residual stream, so its (B, L, ffn_dim) hidden exists one chunk at a time.
    """

    lean = False
    ffn_chunk = 0

    def __init__(self, cfg: VaceConfig, ops, factory, backend):
        super().__init__()
        dim = cfg.dim
        self.norm1 = ops.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False, **factory)
        self.self_attn = Attention(dim, cfg.num_heads, cfg.eps, ops, factory, backend)
        self.norm3 = ops.LayerNorm(dim, eps=cfg.eps, elementwise_affine=True, **factory)
        self.cross_attn = Attention(dim, cfg.num_heads, cfg.eps, ops, factory, backend)
        self.norm2 = ops.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False, **factory)
        self.ffn = nn.Sequential(ops.Linear(dim, cfg.ffn_dim, **factory), nn.GELU(approximate="tanh"),
                                 ops.Linear(cfg.ffn_dim, dim, **factory))
        self.modulation = modulation(6, dim, factory)

    def forward(self, x, e, text, rope, self_bias=None, cross_bias=None):
        """x (B, L, dim) fp32 residual stream; e (B, 6, dim) fp32; text (B, 512, dim) in compute dtype."""
        cd = text.dtype
        shift1, scale1, gate1, shift2, scale2, gate2 = rearrange(
            self.modulation.to(e) + e, "b six d -> six b 1 d")
        y = self.self_attn(self._modulate(self.norm1, x, shift1, scale1).to(cd), rope=rope, bias=self_bias)
        if self.lean:  # out of place: x may be x0, which the context blocks read later
            return self._lean_rest(torch.addcmul(x, y, gate1), text, cross_bias, shift2, scale2, gate2)
        x = x + y.to(x.dtype) * gate1
        x = x + self.cross_attn(self.norm3(x).to(cd), context=text, bias=cross_bias).to(x.dtype)
        y = self.ffn(self._modulate(self.norm2, x, shift2, scale2).to(cd))
        return x + y.to(x.dtype) * gate2

    def _modulate(self, norm, x, shift, scale):
        """norm(x) * (1 + scale) + shift in fp32; lean: in place on the norm's output (the same values)."""
        y = norm(x)
        return y.mul_(1 + scale).add_(shift) if self.lean else y * (1 + scale) + shift

    def _lean_rest(self, x, text, cross_bias, shift, scale, gate):
        """Cross-attention and FFN written into x (B, L, dim), which this block owns."""
        x.add_(self.cross_attn(self.norm3(x).to(text.dtype), context=text, bias=cross_bias))
        for part in x.split(self.ffn_chunk or x.shape[1], dim=1):  # views of x: the FFN is per token
            part.addcmul_(self.ffn(self._modulate(self.norm2, part, shift, scale).to(text.dtype)), gate)
        return x


class ContextBlock(WanBlock):
    """A VACE context block: a full Wan block over the context tokens that also emits a hint.

    Context block 0 first adds the patch-embedded noisy latent x0 to the projected context.
    """

    def __init__(self, cfg: VaceConfig, ops, factory, backend, first: bool):
        super().__init__(cfg, ops, factory, backend)
        if first:
            self.before_proj = ops.Linear(cfg.dim, cfg.dim, **factory)
        self.after_proj = ops.Linear(cfg.dim, cfg.dim, **factory)

    def forward(self, c, x0, e, text, rope, self_bias=None, cross_bias=None):
        """c (B, L, dim) fp32 context stream -> (next c, hint (B, L, dim) fp32)."""
        if hasattr(self, "before_proj"):
            c = self.before_proj(c.to(text.dtype)).to(x0.dtype) + x0
        c = super().forward(c, e, text, rope, self_bias, cross_bias)
        return c, self.after_proj(c.to(text.dtype)).to(c.dtype)


class Head(nn.Module):
    def __init__(self, cfg: VaceConfig, ops, factory):
        super().__init__()
        self.norm = ops.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False, **factory)
        self.head = ops.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size), **factory)
        self.modulation = modulation(2, cfg.dim, factory)

    def forward(self, x, t_emb):
        """x (B, L, dim) fp32, t_emb (B, dim) fp32 -> (B, L, out_dim * prod(patch)) fp32."""
        shift, scale = rearrange(self.modulation.to(t_emb) + t_emb[:, None], "b two d -> two b 1 d")
        return self.head(self.norm(x) * (1 + scale) + shift)


def _rows(x: torch.Tensor, rows: slice, part: torch.Tensor) -> torch.Tensor:
    """x (B, ...) with its batch rows `rows` replaced by `part`."""
    return torch.cat([x[:rows.start], part, x[rows.stop:]])


def _add_hint(x: torch.Tensor, hint: torch.Tensor, kept) -> torch.Tensor:
    """x + hint on the rows that keep the block (`kept`: all rows, a slice of them, or None: none)."""
    if kept == slice(None):
        return x + hint
    return x if kept is None else _rows(x, kept, x[kept] + hint[kept])


class VaceTransformer(nn.Module):
    """Wan2.1 DiT + VACE context blocks. One or more VCU context streams, each with its own strength.

    A `denoiser.Denoiser` (staged): `compute_dtype` is the activations' dtype (set by the loader; by default the
    weights' dtype), `device` where its inputs go (by default where its weights are; a caller streaming the
    weights from the CPU sets it). region_loras: LoRAs confined to regions (vace_core.lora.region), applied per
    token by the sampler."""

    region_loras: tuple = ()
    weights_check = None  # the loader's finite.WeightsCheck of the weights it kept mapped (None: nothing pending)

    staged = True

    def __init__(self, config: VaceConfig, operations=nn, device=None, dtype=None, attention_backend="auto"):
        super().__init__()
        cfg, ops = config, operations
        self.config = cfg
        backend = resolve_backend(attention_backend)
        factory = {"device": device, "dtype": dtype}
        self.patch_embedding = ops.Conv3d(cfg.in_dim, cfg.dim, cfg.patch_size, stride=cfg.patch_size, **factory)
        self.text_embedding = nn.Sequential(ops.Linear(cfg.text_dim, cfg.dim, **factory),
                                            nn.GELU(approximate="tanh"), ops.Linear(cfg.dim, cfg.dim, **factory))
        self.time_embedding = nn.Sequential(ops.Linear(cfg.freq_dim, cfg.dim, **factory), nn.SiLU(),
                                            ops.Linear(cfg.dim, cfg.dim, **factory))
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(cfg.dim, 6 * cfg.dim, **factory))
        self.blocks = nn.ModuleList(WanBlock(cfg, ops, factory, backend) for _ in range(cfg.num_layers))
        self.head = Head(cfg, ops, factory)
        self.vace_patch_embedding = ops.Conv3d(cfg.vace_in_dim, cfg.dim, cfg.patch_size, stride=cfg.patch_size,
                                               **factory)
        self.vace_blocks = nn.ModuleList(ContextBlock(cfg, ops, factory, backend, first=i == 0)
                                         for i in range(len(cfg.vace_layers)))
        self.context_block_after = {layer: i for i, layer in enumerate(cfg.vace_layers)}
        self._rope_cache = {}
        self._compute_dtype = None
        self._device = None

    @property
    def compute_dtype(self) -> torch.dtype:
        """The loader's choice, else the dtype of the weights (float32 for fp8 storage)."""
        if self._compute_dtype is not None:
            return self._compute_dtype
        dtype = self.patch_embedding.weight.dtype
        return dtype if dtype.itemsize > 1 else torch.float32

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype):
        self._compute_dtype = dtype

    @property
    def device(self) -> torch.device:
        return self._device or self.patch_embedding.weight.device

    @device.setter
    def device(self, device):
        self._device = None if device is None else torch.device(device)

    def agree(self, flag: bool) -> bool:
        return flag

    def weights_checked(self) -> None:
        """Waits for the loader's NaN/inf check of the weights and raises its VaceError (naming the tensor)."""
        if self.weights_check is not None:
            self.weights_check.wait()

    def _rope(self, grid, device, dtype) -> tuple:
        """RoPE (cos, sin) for a token grid: computed once per (grid, device, dtype), reused every step."""
        key = (grid, device, dtype)
        if key not in self._rope_cache:
            self._rope_cache = {key: rope_cos_sin(rope_angles(grid, self.config.head_dim, device=device), dtype)}
        return self._rope_cache[key]

    @staticmethod
    def _patchify(embed, video, dtype):
        """(B, C, T, H, W) -> (B, L, dim) tokens, embedded in float32 (or wider) like the reference."""
        return rearrange(embed(video.to(dtype)), "b d t h w -> b (t h w) d")

    def check(self, x, vace_context, vace_scale):
        """The call's input checks: one strength per stream, each stream shaped like the latent."""
        if len(vace_context) != len(vace_scale):
            raise VaceError(f"{len(vace_context)} VACE context streams but {len(vace_scale)} strengths: "
                            "give one strength per stream.")
        for i, scale in enumerate(vace_scale):
            if isinstance(scale, torch.Tensor) and scale.shape != (x.shape[2],):
                raise VaceError(f"VACE stream {i}'s per-frame strengths have shape {tuple(scale.shape)}: give one "
                                f"weight per latent frame ({x.shape[2]}, reference latents first)")
        for i, c in enumerate(vace_context):
            if c.shape[1] != self.config.vace_in_dim or c.shape[2:] != x.shape[2:]:
                raise VaceError(f"VACE context stream {i} has shape {tuple(c.shape)}; it must be "
                                f"(B, {self.config.vace_in_dim}, {', '.join(map(str, x.shape[2:]))}) to match the "
                                "latent: encode the VCU at the sampler's size and length.")

    def embed(self, x, t, context, vace_context=()) -> Tokens:
        """The inputs as tokens: everything the blocks read (see `Tokens`). Every call (direct, staged, sharded)
        starts here, so no output comes from weights whose check failed or is still running."""
        self.weights_checked()
        cfg, cd = self.config, x.dtype
        hp = upcast(x).dtype  # the fp32 islands: residual stream, time embedding, modulation, norms
        pt, ph, pw = cfg.patch_size
        grid = (x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw)
        rope = self._rope(grid, x.device, hp)

        t_emb = self.time_embedding(sinusoid(t, cfg.freq_dim).to(hp))  # (B, dim)
        e = rearrange(self.time_projection(t_emb), "b (six d) -> b six d", six=6)
        # zero-padded to 512 as the reference; longer prompts (ComfyUI's tokenizer does not truncate) are
        # attended whole, as ComfyUI's native Wan model does
        text = nn.functional.pad(context, (0, 0, 0, max(0, cfg.text_len - context.shape[1])))
        text = self.text_embedding(text.to(cd))

        x = self._patchify(self.patch_embedding, x, hp)
        streams = [self._patchify(self.vace_patch_embedding, c, hp).expand_as(x) for c in vace_context]
        return Tokens(x, x, streams, e, t_emb, text, rope, grid)

    def run_blocks(self, tokens: Tokens, vace_scale=(), self_bias=None, cross_bias=None, *, main: bool = True,
                   hints: bool = False):
        """Main blocks with the context blocks' hints added -> the residual stream x (B, L, dim). A stream's
        strength is a number, or per token (1, L, 1) (`token_scale` of per-frame strengths). A block whose
        self-attention bias is a `layer_skip.SkipRows` runs on the rows that keep it only, and only they get its
        hint (skip-layer guidance).

        main False: the context blocks alone (they read x0, never the main stream, so they need no main block):
        tokens.x plus the scaled hints. hints True: returns (x, the sum of the scaled hints added, (B, L, dim))
        instead of x. A step cache that reuses the main blocks' residual but not the hints uses both."""
        x, streams = tokens.x, list(tokens.streams)
        total = torch.zeros_like(x) if hints else None
        e, text, rope = tokens.e, tokens.text, tokens.rope
        context_bias = block_bias(self_bias, "context"), block_bias(cross_bias, "context")
        scales = [token_scale(scale, tokens.grid) for scale in vace_scale]
        for i, block in enumerate(self.blocks):
            bias, cross, kept = block_bias(self_bias, i), block_bias(cross_bias, i), slice(None)
            if isinstance(bias, SkipRows):  # skip-layer guidance: only the rows that keep this block run it
                kept = bias.kept(x.shape[0])
                bias, cross = narrow_bias(bias.inner, rows=kept), narrow_bias(cross, rows=kept)
            if main and kept == slice(None):
                x = block(x, e, text, rope, bias, cross)
            elif main and kept is not None:
                x = _rows(x, kept, block(x[kept], e[kept], text[kept], rope, bias, cross))
            j = self.context_block_after.get(i)
            if j is None:
                continue
            for s, scale in enumerate(scales):  # interleaved: one hint alive at a time
                streams[s], hint = self.vace_blocks[j](streams[s], tokens.x0, e, text, rope, *context_bias)
                hint = hint * (scale.to(hint) if isinstance(scale, torch.Tensor) else scale)
                x = _add_hint(x, hint, kept)
                total = None if total is None else _add_hint(total, hint, kept)
        return x if total is None else (x, total)

    def unpatchify(self, x, tokens: Tokens, dtype) -> torch.Tensor:
        """Head over the residual stream (B, L, dim) -> (B, out_dim, T, H, W) in `dtype`."""
        return self.to_video(self.head(x, tokens.t_emb), tokens.grid, dtype)

    def to_video(self, out, grid, dtype) -> torch.Tensor:
        """Head output (B, L, out_dim * prod(patch)) -> (B, out_dim, T, H, W) in `dtype` (sequence parallelism
        runs the head per rank and gathers its narrow output instead of the residual stream)."""
        (t, h, w), (pt, ph, pw) = grid, self.config.patch_size
        return rearrange(out, "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)",
                         t=t, h=h, w=w, pt=pt, ph=ph, pw=pw).to(dtype)

    def forward(self, x, t, context, vace_context=(), vace_scale=(), self_bias=None, cross_bias=None):
        """Predicts the flow velocity.

        x (B, in_dim, T, H, W) noisy latent (reference latents first along T), its dtype is the compute dtype;
        t (B,) timesteps in [0, 1000]; context (B, L, text_dim) text features (zero-padded to 512 here,
        as the reference attends all 512 positions); vace_context: one (B or 1, 96, T, H, W) tensor per
        context stream; vace_scale: one strength per stream (a number, or (T,) weights per latent frame).
        Returns (B, out_dim, T, H, W) in x's dtype.
        self_bias / cross_bias: `attention.attention`'s bias for the main blocks' self-/cross-attention, or a
        modulation object that also chooses its blocks (regional prompts: `regional.STLayoutAttention`).

        The three stages (embed, run_blocks, unpatchify) are public so wrappers (step caching, sequence
        parallelism) can work between them.
        """
        self.check(x, vace_context, vace_scale)
        tokens = self.embed(x, t, context, vace_context)
        return self.unpatchify(self.run_blocks(tokens, vace_scale, self_bias, cross_bias), tokens, x.dtype)
