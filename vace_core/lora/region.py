"""Region-scoped LoRAs: a LoRA that changes only the tokens of one region, so two character LoRAs coexist.

Unmerged, per token. A layer that reads each video token on its own, y = f(x; W, b) (the blocks' Linears but
the cross-attention's key/value, their q/k RMSNorms, norm3, the head, the patch embeddings whose kernel is
their stride), becomes

    y = f(x; W, b) + s · m ⊙ f(x; ΔW, Δb)          (a LoRA keeps f(x; ΔW) = B (A x) · alpha / rank low rank)

with m the region's token mask (1 on the region's tokens, 0 elsewhere: a token belongs to the region when the
region covers most of its 16x16 pixels of its frame group, as regional prompts decide; reference tokens
belong to no region) and s the strength (context blocks: the context strength). Every f above is linear in
(W, b), so f(x; ΔW, Δb) is exactly the change a merged LoRA makes to that layer's output.

Cross-attention keys and values read the text, which has no place in the video: there the region's queries
get the cross-attention computed with the LoRA's key/value changes, the others the base one,

    o = o_base + Σ_r m_r ⊙ (o_r − o_base)            (o_r: keys/values of LoRA r; one more cross-attention
                                                      per region LoRA that changes them, 512 keys)

exact where regions do not overlap; where masks overlap the LoRAs' changes add. Layers that act on the
timestep or on the whole text before the blocks (time embedding, modulation tables, text embedding) are not
per token: a region LoRA changing them is refused (apply that LoRA to the whole model instead).

What stays outside: a token of no region gets no change from any layer, but it still attends the region's
tokens in self-attention, whose keys/values the LoRA changed, so its output moves through attention (the
leak; with self-attention masked to the regions, outside tokens equal the base model's exactly).
"""

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import VaceError
from ..regional import token_membership
from ..vcu.pixels import to_masks
from .apply import CONTEXT_PREFIXES, _alpha, delta, param_shapes
from .keys import DOWN, UP, LoraPlan, plan_lora

TEXT_SIDE = ("cross_attn.k", "cross_attn.v", "cross_attn.norm_k")  # read the text: blended per query instead
NOT_PER_TOKEN = ("time_embedding", "time_projection", "text_embedding")  # and every modulation table


@dataclass(eq=False)  # compared by identity: each attached LoRA is its own
class RegionLora:
    """One LoRA confined to a region. patches: module path -> {"weight" / "bias": its pieces}; region: a mask
    (T, H, W) or (H, W) in the video's pixels (white = the region; one frame for all, or one per frame), or
    the index (1..n) of a Regional Prompts region."""

    name: str
    patches: dict[str, dict[str, dict[str, Tensor]]]
    strength: float
    context_strength: float
    region: Tensor | int
    plan: LoraPlan | None = None  # what applied and what was skipped, for the report
    _cache: dict = field(default_factory=dict, repr=False)

    def scale(self, module: str) -> float:
        return self.context_strength if module.startswith(CONTEXT_PREFIXES) else self.strength

    def pieces(self, module: str, attr: str, x: Tensor) -> dict[str, Tensor]:
        """The module's pieces on x's device and dtype (cached: moved once per run)."""
        key = (module, attr, x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = {k: v.to(x.device, x.dtype) for k, v in self.patches[module][attr].items()}
        return self._cache[key]


def region_lora(model: nn.Module, lora: dict[str, Tensor], strength: float, context_strength: float | None,
                region: Tensor | int, name: str = "LoRA") -> RegionLora:
    """A LoRA's pieces planned against `model` and checked to be per token (see the module doc)."""
    if isinstance(region, bool) or (isinstance(region, int) and region < 1):
        raise VaceError(f"{name}: region {region!r} is neither a Regional Prompts region (1, 2, ...) nor a mask")
    if not isinstance(region, int):
        region = to_masks(region)
    plan = plan_lora(lora, param_shapes(model), name)
    patches: dict[str, dict] = {}
    for param, parts in plan.patches().items():
        module, _, attr = param.rpartition(".")
        patches.setdefault(module, {})[attr] = parts
    refused = sorted(m for m, attrs in patches.items() if m.startswith(NOT_PER_TOKEN) or "modulation" in attrs)
    if refused:
        raise VaceError(f"{name} changes layers that are not per token ({', '.join(refused[:4])}"
                        f"{', ...' if len(refused) > 4 else ''}): a LoRA confined to a region can only change the "
                        "blocks' attention, FFN, norms, the head and the patch embeddings. Apply it without a "
                        "region (to the whole model).")
    strength = float(strength)
    return RegionLora(name, patches, strength, strength if context_strength is None else float(context_strength),
                      region, plan)


def attach_region_lora(model: nn.Module, lora: RegionLora) -> None:
    """Adds a region LoRA to a VaceTransformer (kept in `model.region_loras`; the sampler applies it per token,
    `remove_loras` takes it off)."""
    model.region_loras = (*getattr(model, "region_loras", ()), lora)


# ---- where the tokens lie ----

@dataclass
class TokenSpace:
    """Where the tokens of one sampled latent lie in the video, to put region masks on them: the video frames
    the latent covers (`positions`, 4n+1; a long-video window's), the frame size, the reference latents in
    front (no region), the Regional Prompts' masks (n, T, H, W) for LoRAs given a region index, and
    `frames`: the latent frames the current forward sees (fused windows; None: all)."""

    positions: tuple[int, ...]
    size: tuple[int, int]
    references: int = 0
    region_masks: Tensor | None = None
    frames: Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def for_vcu(cls, vcu, positions: Sequence[int] | None = None, region_masks: Tensor | None = None):
        return cls(tuple(range(vcu.length)) if positions is None else tuple(positions), tuple(vcu.size),
                   len(vcu.references), region_masks)

    @contextmanager
    def window(self, frames: Tensor):
        """The forwards inside see only these latent frames (references included)."""
        self.frames = frames
        try:
            yield
        finally:
            self.frames = None

    def _pixels(self, region) -> Tensor:
        if isinstance(region, int):
            if self.region_masks is None or region > len(self.region_masks):
                have = 0 if self.region_masks is None else len(self.region_masks)
                raise VaceError(f"a LoRA is confined to Regional Prompts region {region}, but the sampler has "
                                f"{have} regions: connect Regional Prompts to the sampler, or give the LoRA a mask")
            return self.region_masks[region - 1]
        return region

    def membership(self, region, grid: tuple[int, int, int]) -> Tensor:
        """The region's token mask (T_lat, h, w), 0/1, for a forward on the token grid `grid`."""
        key = id(region) if not isinstance(region, int) else region
        if key not in self._cache:
            masks, last = self._pixels(region), max(self.positions)
            if 1 < len(masks) <= last:
                raise VaceError(f"a region mask has {len(masks)} frames but the video has at least {last + 1}: "
                                "give one mask for all frames or one per frame")
            masks = masks if len(masks) == 1 else masks[list(self.positions)]  # this window's frames
            t = self.references + (len(self.positions) - 1) // 4 + 1
            h, w = self.size[0] // 16, self.size[1] // 16
            tokens = token_membership(masks[None], (t, h, w), self.references, soft=False)[:, 1]
            self._cache[key] = rearrange(tokens, "(t h w) -> t h w", t=t, h=h, w=w)
        full = self._cache[key]
        part = full if self.frames is None else full[self.frames.cpu()]
        if tuple(part.shape) != tuple(grid):
            raise VaceError(f"region LoRA masks are laid out for {tuple(part.shape)} tokens but the model sees "
                            f"{tuple(grid)}: build the token space for the latent being sampled")
        return part


# ---- the hooks ----

def _weight_out(module: nn.Module, weight: dict[str, Tensor], x: Tensor) -> Tensor:
    """f(x; ΔW, 0): low rank for a Linear's plain LoRA, else through the full change ΔW."""
    if isinstance(module, nn.Linear) and DOWN in weight:
        return (x @ weight[DOWN].flatten(1).T) @ weight[UP].flatten(1).T * _alpha(weight, weight[DOWN].shape[0])
    dw = delta(weight, module.weight.shape, x.device).to(x.dtype)
    if isinstance(module, nn.Linear):
        return F.linear(x, dw)
    if isinstance(module, nn.Conv3d):
        return F.conv3d(x, dw, None, module.stride)
    if isinstance(module, nn.RMSNorm):
        return F.rms_norm(x, module.normalized_shape, None, module.eps) * dw
    return F.layer_norm(x, module.normalized_shape, None, None, module.eps) * dw


def _bias_shape(module: nn.Module) -> tuple:
    """How a bias change (out,) broadcasts over the layer's output: channels last, or dim 1 for Conv3d."""
    return (-1, 1, 1, 1) if isinstance(module, nn.Conv3d) else (-1,)


def delta_out(module: nn.Module, lora: RegionLora, path: str, x: Tensor) -> Tensor:
    """f(x; ΔW, Δb) of layer `path` (without the strength): the change a merged LoRA makes to its output."""
    pieces = lora.patches[path]
    out = 0
    if "weight" in pieces:
        out = _weight_out(module, lora.pieces(path, "weight", x), x)
    if "bias" in pieces:
        out = out + lora.pieces(path, "bias", x)["diff"].reshape(_bias_shape(module))
    return out


def unwrap(net):
    """The VaceTransformer inside a denoiser (`denoiser.Wrapper`s and ComfyUI's Managed: `inner`, which loads it;
    sequence parallelism: `model`), or None."""
    for _ in range(8):
        if isinstance(net, nn.Module) and hasattr(net, "patch_embedding"):
            return net
        net = getattr(net, "inner", None) if hasattr(net, "inner") else getattr(net, "model", None)
    return None


class RegionScope:
    """The region LoRAs of the models one sampling run uses, applied per token (hooks) while it runs.

    `attach(net)` before a model runs (idempotent); `close()` takes every hook off. The patch embedding's
    pre-hook reads each forward's token grid and sets the region masks for it."""

    def __init__(self, space: TokenSpace | None):
        self.space, self.handles, self.seen = space, [], set()
        self.masks: dict[int, Tensor] = {}  # id(lora) -> (T, h, w) for the forward in progress
        self.branch: RegionLora | None = None  # whose text-side changes the cross-attention's extra pass takes

    def attach(self, net) -> None:
        model = unwrap(net)
        if model is None or id(model) in self.seen:
            return
        self.seen.add(id(model))
        loras = getattr(model, "region_loras", ())
        if not loras:
            return
        if self.space is None:
            raise VaceError("the model carries LoRAs confined to regions, but this sampler does not say where "
                            "its tokens lie in the video: sample through vace_core.pipeline / long_video")
        self.handles.append(model.patch_embedding.register_forward_pre_hook(self._grid(model, loras)))
        paths = {p for lora in loras for p in lora.patches}
        for path in sorted(paths):
            module, users = model.get_submodule(path), [lora for lora in loras if path in lora.patches]
            text = path.endswith(TEXT_SIDE)
            self.handles.append(module.register_forward_hook(
                self._text_side(path, users) if text else self._per_token(path, users)))
        for attn in sorted({p.rpartition(".")[0] for p in paths if p.endswith(TEXT_SIDE)}):
            users = [lora for lora in loras if any(p.startswith(attn + ".") and p.endswith(TEXT_SIDE)
                                                   for p in lora.patches)]
            self.handles.append(model.get_submodule(attn).register_forward_hook(self._blend(users),
                                                                                 with_kwargs=True))

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.seen, self.masks = [], set(), {}

    def _grid(self, model, loras):
        def hook(module, args):
            x = args[0]
            grid = tuple(n // p for n, p in zip(x.shape[2:], model.config.patch_size, strict=True))
            for lora in loras:
                self.masks[id(lora)] = self.space.membership(lora.region, grid).to(x.device)
        return hook

    def _mask(self, lora: RegionLora, tokens: Tensor, path: str) -> Tensor:
        """The region's mask shaped for a (B, L, C) layer output (or (B, C, T, h, w) for a patch embedding)."""
        m = self.masks[id(lora)]
        if tokens.ndim == 5:
            return m.to(tokens.dtype)[None, None]
        if tokens.shape[1] != m.numel():
            raise VaceError(f"region LoRA {lora.name}: layer {path} sees {tokens.shape[1]} tokens of {m.numel()}. "
                            "Region LoRAs need every layer to see the whole sequence: turn FFN chunking off "
                            "(ffn_chunk 0) and run without sequence parallelism (--parallel; --cfg-parallel works)")
        return m.to(tokens.dtype).reshape(1, -1, 1)

    def _per_token(self, path: str, loras: list[RegionLora]):
        def hook(module, args, output):
            x = args[0]
            for lora in loras:
                change = delta_out(module, lora, path, x).to(output.dtype)
                output = output + lora.scale(path) * self._mask(lora, output, path) * change
            return output
        return hook

    def _text_side(self, path: str, loras: list[RegionLora]):
        def hook(module, args, output):
            lora = self.branch
            if any(lora is mine for mine in loras):
                return output + lora.scale(path) * delta_out(module, lora, path, args[0]).to(output.dtype)
            return None
        return hook

    def _blend(self, loras: list[RegionLora]):
        def hook(module, args, kwargs, output):
            total = output
            for lora in loras:
                self.branch = lora
                try:
                    with_lora = module.forward(*args, **kwargs)
                finally:
                    self.branch = None
                total = total + self._mask(lora, output, "cross-attention") * (with_lora - output)
            return total
        return hook


@contextmanager
def region_scope(space: TokenSpace | None):
    """A RegionScope for one sampling run, closed at the end whatever happens."""
    scope = RegionScope(space)
    try:
        yield scope
    finally:
        scope.close()
