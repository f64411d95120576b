"""Regional prompts: VideoGrain's space-time layout attention (ST-Layout Attn) on the VACE DiT.

VideoGrain (knightyxp/VideoGrain, `prompt_attention/attention_util.py`) edits several instances of a video
at once without training, by modulating the attention scores s = QKᵀ/√d of every layer during the first
steps. Per query row, with mx / mn the row's max / min over the keys:

    s += R·w·(mx − s)        where R = 1 (same region / the region's own prompt tokens)
    s −= (1 − R)·w·(s − mn)  elsewhere,        w = c·ξ(t)·(1 − S)

c = 0.3 for self-attention and 1.0 for cross-attention, ξ(t) = ((t − 1)/1000)^5, S the size fraction of the
query's region, applied for the first 15 of 50 steps. R_self[q, k] = 1 when q and k lie in one region (across
all frames); R_cross[q, k] = 1 when text token k belongs to the prompt of q's region.

Memory: written per row, s' = (1 − w)·s + w·mn + w·(mx − mn)·R, and softmax ignores the row constant w·mn.
R is low rank (R = A_q A_kᵀ with A the (tokens, groups) region membership), so the modulated scores are an
ordinary dot product of augmented vectors: q' = [(1 − w)·q, w·(mx − mn)·A_q·√d], k' = [k, A_k]. Attention
then runs through PyTorch SDPA (fused kernels, no bias tensor), in query chunks; only the row max / min need
an extra chunked QKᵀ pass. No L×L matrix exists at any point (32,760 tokens at 832×480×81).

Adaptation to Wan (flow matching): ξ takes the timestep the DiT is given, t = 1000·σ (the DDIM timestep's
counterpart), so ξ = ((1000σ − 1)/1000)^5; the step window is the same fraction of the run (default 0.3 =
15/50). Text: umT5 has no start token, so a local prompt's tokens are its ids without the final EOS (offset
0); where they appear verbatim in the global prompt, their features there are replaced by the local prompt
encoded alone (as VideoGrain does); otherwise they are appended after the global prompt.
"""

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from .denoiser import Step, Wrapper, compose_bias
from .errors import VaceError
from .settings import check, knob
from .vcu.pixels import resize_masks, to_masks

TEXT_LEN = 512  # the DiT's text positions (it zero-pads the prompt to this)
SELF_STRENGTH, CROSS_STRENGTH, END = 0.3, 1.0, 0.3  # VideoGrain's sreg, creg, and 15 of 50 steps
TEMPORAL_STRIDE, TOKEN_STRIDE = 4, 16  # video frames per latent frame (after frame 0); pixels per token (8 x 2)
MAX_CHUNK = 4096
Encoded = tuple[Sequence[int], Tensor]  # token ids ending with EOS, and their features (len(ids), D)


def time_weight(t: float) -> float:
    """VideoGrain's ξ(t) = ((t − 1)/1000)^5 at the DiT's timestep t in [0, 1000] (0 below t = 1)."""
    return max((t - 1) / 1000, 0.0) ** 5


# ---- text: the global prompt with the regions' prompts ----

@dataclass(frozen=True)
class RegionalText:
    """The text the DiT attends: features (L, D), and per token the group whose prompt it belongs to
    (token_group (L,): 1..n for region n's prompt, 0 for the background prompt, -1 for the rest)."""

    features: Tensor
    token_group: Tensor


def find_run(ids: Sequence[int], run: Sequence[int], taken: Tensor) -> int | None:
    """The first position where `run` occurs in `ids` without overlapping `taken` positions."""
    n = len(run)
    for i in range(len(ids) - n + 1):
        if list(ids[i:i + n]) == list(run) and not taken[i:i + n].any():
            return i
    return None


def compose_text(global_prompt: Encoded, prompts: Sequence[Encoded | None]) -> RegionalText:
    """prompts[g]: group g's encoded prompt (g = 0 background, 1..n regions), or None.

    A prompt found verbatim in the global prompt takes those positions (features replaced by its own
    encoding, VideoGrain's rule); any other is appended. Each contributes its tokens without the EOS.
    """
    ids, features = global_prompt
    features, groups = features.clone(), torch.full((len(ids),), -1)
    appended, appended_groups = [], []
    for g, encoded in enumerate(prompts):
        if encoded is None:
            continue
        local_ids, local = list(encoded[0])[:-1], encoded[1][:-1]  # umT5: no start token; drop the EOS
        if not local_ids:
            raise VaceError(f"the prompt of {group_name(g)} is empty: give it a few words, or leave the region out")
        at = find_run(ids[:-1], local_ids, groups >= 0)
        if at is None:
            appended.append(local)
            appended_groups.append(torch.full((len(local_ids),), g))
        else:
            features[at:at + len(local_ids)] = local.to(features)
            groups[at:at + len(local_ids)] = g
    features = torch.cat([features, *[a.to(features) for a in appended]])
    groups = torch.cat([groups, *appended_groups])
    if len(groups) > TEXT_LEN:
        raise VaceError(f"the global prompt and the regions' prompts make {len(groups)} tokens; the model reads at "
                        f"most {TEXT_LEN}: shorten them, or write the regions' prompts inside the global prompt "
                        "word for word (they then take no extra tokens)")
    return RegionalText(features, groups)


def group_name(g: int) -> str:
    return "the background" if g == 0 else f"region {g}"


def encode_text(encode: Callable[[str], Encoded], prompt: str, region_prompts: Sequence[str],
                background_prompt: str = "") -> RegionalText:
    """Encodes each prompt on its own with `encode(text) -> (ids, features)` and composes them."""
    local = [encode(background_prompt) if background_prompt.strip() else None]
    return compose_text(encode(prompt), local + [encode(p) for p in region_prompts])


# ---- layout: region masks -> token memberships ----

def pixel_groups(masks: Tensor) -> Tensor:
    """(n, T, H, W) binary masks -> (T, H, W) group per pixel: the first region covering it (1..n), else 0."""
    covered = masks > 0.5
    return torch.where(covered.any(0), covered.float().argmax(0) + 1, 0)  # argmax: the first of ties


def token_membership(masks: Tensor, grid: tuple[int, int, int], references: int, soft: bool) -> Tensor:
    """(n, T, H, W) masks -> (L, n + 1) membership of each token (t h w order, references first, empty).

    A token covers 16x16 pixels of one frame group (frame 0 alone, then 4 frames each, the VAE's causal
    stride); its membership is the area fraction of each group in it (soft), or 1 for the group with the
    largest fraction (hard, as VideoGrain's nearest-resized layouts).
    """
    n, frames = masks.shape[:2]
    t_video, h, w = grid[0] - references, grid[1], grid[2]
    length = (t_video - 1) * TEMPORAL_STRIDE + 1
    if frames == 1:
        masks = masks.expand(-1, length, -1, -1)
    elif frames < length:
        raise VaceError(f"the region masks have {frames} frames but the video has {length}: give one mask per "
                        "frame, or a single mask for all frames")
    masks = masks[:, :length]  # like the VCU builders, the first frames of a longer clip
    masks = torch.stack([resize_masks(m, (h * TOKEN_STRIDE, w * TOKEN_STRIDE)) for m in masks.float()])
    onehot = F.one_hot(pixel_groups(masks), n + 1).float()  # (T, H, W, G)
    pooled = F.avg_pool2d(rearrange(onehot, "t h w g -> (t g) h w"), TOKEN_STRIDE)
    pooled = rearrange(pooled, "(t g) h w -> t h w g", g=n + 1)
    rest = rearrange(pooled[1:], "(t s) h w g -> t s h w g", s=TEMPORAL_STRIDE).mean(1)
    groups = torch.cat([pooled[:1], rest])
    if not soft:
        groups = F.one_hot(groups.argmax(-1), n + 1).float()
    return F.pad(rearrange(groups, "t h w g -> (t h w) g"), (0, 0, references * h * w, 0))


# ---- the modulation: exact, in query chunks, no L x L ----

def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        import psutil  # ComfyUI ships it

        return psutil.virtual_memory().available
    except ImportError:
        return 4 << 30


def chunk_rows(batch: int, heads: int, keys: int, element_size: int, device: torch.device) -> int:
    """Query rows per chunk: the chunk's scores (B, heads, rows, keys) and SDPA's temporaries (about three
    such tensors on its unfused path) take at most a quarter of the free memory."""
    per_row = 3 * batch * heads * keys * element_size
    return int(max(16, min(MAX_CHUNK, free_bytes(device) // 4 // per_row)))


@dataclass
class STLayoutAttention:
    """ST-Layout attention as the `bias` of `attention.attention`, which hands it q, k, v.

    query_groups (Lq, G) and key_groups (Lk, G): region memberships, R = query_groups @ key_groupsᵀ;
    weight (B or 1, Lq): w per query row (0: that row is not modulated). `blocks`: the main blocks it applies
    to (None: all); `context_blocks`: the context blocks too. `chunk`: query rows per chunk (None: from free
    memory).
    """

    query_groups: Tensor
    key_groups: Tensor
    weight: Tensor
    blocks: frozenset | None = None
    context_blocks: bool = False
    chunk: int | None = None

    def for_block(self, block):
        """This modulation for main block `block` (an index) or a context block ("context"), else None."""
        if block == "context":
            return self if self.context_blocks else None
        return self if self.blocks is None or block in self.blocks else None

    def narrow(self, rows=None, queries=None, keys=None) -> "STLayoutAttention":
        """This modulation for batch `rows` (a slice), query tokens `queries` and key tokens `keys` (index
        tensors; a query index of -1 is padding: no region, not modulated), as long-video windows and sequence
        shards need it (`denoiser.narrow_bias`)."""
        query_groups, weight, key_groups = self.query_groups, self.weight, self.key_groups
        if rows is not None and len(weight) > 1:
            weight = weight[rows]
        if queries is not None:
            real = (queries >= 0).to(weight)
            query_groups = query_groups[queries.clamp(min=0)] * real[:, None]
            weight = weight[:, queries.clamp(min=0)] * real
        if keys is not None:
            key_groups = key_groups[keys]
        return replace(self, query_groups=query_groups, key_groups=key_groups, weight=weight)

    def _check(self, q, k):
        if (q.shape[1], k.shape[1]) != (len(self.query_groups), len(self.key_groups)):
            raise VaceError(f"the regional layout is for {len(self.query_groups)} queries and "
                            f"{len(self.key_groups)} keys, but attention has {q.shape[1]} and {k.shape[1]}: "
                            "build the regions for the latent being sampled")

    def attend(self, q: Tensor, k: Tensor, v: Tensor, backend: str = "sdpa") -> Tensor:
        """q (B, Lq, H, D), k/v (B, Lk, H, D) -> (B, Lq, H*D), VideoGrain's modulated attention."""
        from .attention import attention

        self._check(q, k)
        if not self.weight.any():  # w = 0: the plain scores, so exactly the unmodulated attention
            return attention(q, k, v, backend)
        (batch, length, heads, dim), groups = q.shape, self.query_groups.shape[1]
        scale, pad = dim ** -0.5, (-groups) % 8  # head dims in multiples of 8 keep SDPA's fused kernels
        q, k, v = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))
        query_groups, weight = (t.to(q) for t in (self.query_groups, self.weight))
        key_groups = repeat(self.key_groups.to(k), "l g -> b h l g", b=batch, h=heads)
        k_aug = torch.cat([k, key_groups, k.new_zeros(*k.shape[:3], pad)], -1)
        v_aug = F.pad(v, (0, groups + pad))  # the fused kernels want one head dim for q, k and v
        out = q.new_empty(batch, heads, length, dim)
        rows = self.chunk or chunk_rows(batch, heads, k.shape[2], q.element_size(), q.device)
        for i in range(0, length, rows):
            qc, w = q[:, :, i:i + rows], weight[:, None, i:i + rows, None]  # w (B, 1, C, 1)
            mn, mx = torch.aminmax(torch.matmul(qc, k.transpose(-1, -2)), dim=-1)  # unscaled row min / max
            extra = (w * (mx - mn)[..., None]) * query_groups[i:i + rows]  # scale·extra·A_k = w·(mx_s − mn_s)·R
            q_aug = torch.cat([qc * (1 - w), extra, qc.new_zeros(*qc.shape[:3], pad)], -1)
            out[:, :, i:i + rows] = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=scale)[..., :dim]
        return rearrange(out, "b h l d -> b l (h d)")


# ---- what the sampler gets ----

def check_coverage(masks: Sequence[Tensor]) -> None:
    """Every region's mask, as the user gave it, must cover some pixels once binarised at 0.5 (checked where the
    masks are given: a window of a long video may well miss a region)."""
    for g, mask in enumerate(masks, 1):
        if not (torch.as_tensor(mask) > 0.5).any():
            peak = float(torch.as_tensor(mask).max())
            why = "it is black everywhere" if peak == 0 else \
                f"its values reach only {peak:.3g}, and masks count where they are above 0.5"
            raise VaceError(f"{group_name(g)}'s mask covers nothing ({why}): that region would steer nothing. "
                            "Give a mask that is white (1) over the region; threshold soft masks at 0.5 first.")


@dataclass
class Regions:
    """Regional prompts for one sampling run: the composed text, the region masks (n, T, H, W) in the video's
    pixels (region g = masks[g - 1]; uncovered pixels are the background, group 0), and the knobs."""

    text: RegionalText
    masks: Tensor
    _: KW_ONLY
    self_strength: float = knob(SELF_STRENGTH, "How strongly self-attention keeps the regions apart (VideoGrain: "
                                "0.3).", min=0.0, max=10.0, step=0.05)
    cross_strength: float = knob(CROSS_STRENGTH, "How strongly each region attends only its own prompt "
                                 "(VideoGrain: 1.0).", min=0.0, max=10.0, step=0.05)
    end: float = knob(END, "Fraction of the steps with the modulation (VideoGrain: 0.3 = 15 of 50): the layout "
                      "forms early; later steps refine freely.", min=0.0, max=1.0, step=0.01)
    context_blocks: bool = knob(False, "Also modulate the VACE context blocks (default: the main DiT blocks "
                                "only).")
    soft_edges: bool = knob(False, "Tokens on a mask edge belong to regions by their area share (off: to the "
                            "region covering most of the token, as VideoGrain).")
    blocks: frozenset | None = None

    def __post_init__(self):
        masks = [to_masks(m) for m in self.masks]  # each (T, H, W): one mask for all frames, or one per frame
        if not masks:
            raise VaceError("regional prompts need at least one region: a prompt and a mask")
        frames = max(len(m) for m in masks)
        if any(m.shape[1:] != masks[0].shape[1:] or len(m) not in (1, frames) for m in masks):
            raise VaceError(f"the region masks differ in size or frame count ({[tuple(m.shape) for m in masks]}): "
                            "make them at one size, each with one frame or one per frame")
        self.masks = torch.stack([m.expand(frames, -1, -1) for m in masks])
        check(self)
        for g in range(1, len(self.masks) + 1):
            if not (self.text.token_group == g).any():
                raise VaceError(f"{group_name(g)} has a mask but no prompt tokens: give each region a prompt")

    def check_text(self, positive: Tensor):
        """The sampler's positive features must be this composed text (token positions refer to it)."""
        real = positive.reshape(-1, positive.shape[-1])
        text = self.text.features.to(real)
        if len(real) < len(text) or not torch.equal(real[:len(text)], text) or real[len(text):].any():
            raise VaceError("the positive conditioning is not the regional prompts' text: connect the Regional "
                            "Prompts node's `positive` output to the sampler's positive input")

    def check_length(self, length: int):
        """A video of `length` frames needs one mask for all frames, or one per frame."""
        if self.masks.shape[1] != 1 and self.masks.shape[1] < length:
            raise VaceError(f"the region masks have {self.masks.shape[1]} frames but the video has {length}: give "
                            "one mask per frame, or a single mask for all frames")

    def frames(self, positions: Sequence[int]) -> "Regions":
        """The regions on the video frames `positions` (a long-video window): the same text, those frames of the
        masks (a single mask stays)."""
        masks = self.masks if self.masks.shape[1] == 1 else self.masks[:, list(positions)]
        return replace(self, masks=masks)

    def for_vcu(self, vcu) -> "RegionalLayout":
        """The layout on the token grid of the latent `vcu` conditions (its references first)."""
        t, h, w = vcu.latent_shape
        return self.layout((t, h // 2, w // 2), len(vcu.references))

    def layout(self, grid: tuple[int, int, int], references: int = 0) -> "RegionalLayout":
        """The layout on the token grid (T_lat incl. references, H/16, W/16)."""
        return RegionalLayout(self, token_membership(self.masks, grid, references, self.soft_edges), grid[1] * grid[2],
                              references)


@dataclass
class RegionalLayout:
    """Regions on one latent's token grid: memberships (L, G) and the per-query weights without ξ(t)."""

    regions: Regions
    membership: Tensor
    frame_tokens: int
    references: int
    self_weight: Tensor = field(init=False)
    cross_weight: Tensor = field(init=False)
    text_groups: Tensor = field(init=False)

    def __post_init__(self):
        r, a = self.regions, self.membership
        video = a[self.references * self.frame_tokens:]
        size = video.sum(0) / len(video)  # S_g: the group's share of all video tokens (all frames)
        per_frame = rearrange(video, "(t n) g -> t n g", n=self.frame_tokens).mean(1)  # S_g in each frame
        per_frame = F.pad(per_frame, (0, 0, self.references, 0))
        frame_of = torch.arange(len(a)) // self.frame_tokens
        self.self_weight = r.self_strength * (a * (1 - size)).sum(1)
        prompted = F.one_hot(r.text.token_group.clamp(min=0), a.shape[1]).float() * (r.text.token_group >= 0)[:, None]
        self.text_groups = F.pad(prompted, (0, 0, 0, TEXT_LEN - len(prompted)))
        has_prompt = self.text_groups.amax(0)  # (G,): the background counts only with a background prompt
        self.cross_weight = r.cross_strength * (a * (1 - per_frame[frame_of]) * has_prompt).sum(1)

    def layer(self, net, step: Step) -> "Regional":
        """The sampler's regional-prompt layer (see vace_core.denoiser): `net` with this step's biases."""
        return Regional(net, self, step)

    def biases(self, t: float, step: int, steps: int, batch: int) -> dict:
        """The model's attention biases at `step` of `steps` with timestep t: self-attention modulated in every
        batch row, cross-attention in row 0 only (the positive prompt; row 1 is CFG's negative)."""
        if step / steps >= self.regions.end:
            return {}
        xi, rows = time_weight(t), torch.zeros(batch, 1)
        rows[0] = 1
        options = {"blocks": self.regions.blocks, "context_blocks": self.regions.context_blocks}
        a = self.membership
        return {"self_bias": STLayoutAttention(a, a, xi * self.self_weight[None], **options),
                "cross_bias": STLayoutAttention(a, self.text_groups, xi * rows * self.cross_weight[None], **options)}


class Regional(Wrapper):
    """One step's denoiser with the regional prompts' attention biases (for the batch of each call)."""

    staged = False

    def __init__(self, inner, layout: RegionalLayout, step: Step):
        super().__init__(inner)
        self.layout, self.step = layout, step

    def __call__(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        """Hooks given by the caller (NAG, skip-layer guidance) wrap the regions' modulation (`compose_bias`)."""
        step = self.step
        biases = self.layout.biases(step.timestep, step.index, step.total, x.shape[0])
        return self.inner(x, t, text, contexts, strengths,
                          self_bias=compose_bias(self_bias, biases.get("self_bias")),
                          cross_bias=compose_bias(cross_bias, biases.get("cross_bias")))
