"""Text encoding for standalone use: UMT5-XXL prompt features the way the official Wan2.1 code makes them.

Official recipe (Wan2.1 `wan/modules/t5.py`, `tokenizers.py`): tokenizer google/umt5-xxl, text cleaned with
ftfy + html unescape + whitespace collapse, at most 512 tokens including the closing EOS, the UMT5-XXL
encoder's last hidden state, and only the real tokens kept. `TextEncoder.encode` returns those (L, 4096)
features, like ComfyUI's CONDITIONING; the DiT zero-pads them to 512 itself.

Files (`load_text_encoder`):
- ComfyUI's `umt5_xxl_fp16.safetensors` / `umt5_xxl_fp8_e4m3fn_scaled.safetensors`: transformers' T5 key
  names (`shared.weight`, `encoder.block.N.layer.0.SelfAttention.q.weight`, ...), maybe ComfyUI's scaled fp8
  (`X.scale_weight` per Linear plus a `scaled_fp8` marker), and the sentencepiece model inside the file as a
  uint8 tensor `spiece_model` (ComfyUI's `comfy/text_encoders/wan.py` and `spiece_tokenizer.py`).
- the official `models_t5_umt5-xxl-enc-bf16.pth` (Wan's own module names), with the `google/umt5-xxl`
  tokenizer folder beside it as the official model folders ship it;
- a transformers folder: `config.json`, weights, and `spiece.model` or `tokenizer.json`.
The model is always a `transformers.UMT5EncoderModel` whose config is read from the weights (or config.json).
"""

import html
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .checkpoints.fp8 import dequantize, drop_fp8_markers
from .checkpoints.io import read_weights
from .errors import VaceError

TEXT_LEN = 512  # tokens, EOS included (the official tokenizer truncates to this)
SPIECE_KEY = "spiece_model"  # ComfyUI stores the tokenizer model inside the weights file under this key
OFFICIAL_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_TOKENIZER_DIR = "google/umt5-xxl"
MAX_DISTANCE = 128  # UMT5's relative-position range; not stored in weights files (ComfyUI hardcodes it too)

# Wan2.1's `sample_neg_prompt` (wan/configs/shared_config.py), used when no negative prompt is given.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

Tokenizer = Callable[[str], list[int]]  # cleaned text -> token ids ending with EOS


def clean_text(text: str) -> str:
    """The official `clean='whitespace'`: ftfy repair (it also turns full-width punctuation into ASCII),
    double html unescape, whitespace runs -> one space, stripped."""
    import ftfy
    import regex  # the official code's: its \s (Unicode White_Space) differs from re's on a few controls

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip()


def resolve_negative_prompt(text: str | None) -> str:
    """An empty or missing negative prompt means Wan's default one (as in the official pipelines)."""
    return text if text and text.strip() else DEFAULT_NEGATIVE_PROMPT


class SentencePieceTokenizer:
    """A sentencepiece model given as its serialized bytes (what ComfyUI's files and `spiece.model` hold)."""

    def __init__(self, model_proto: bytes):
        import sentencepiece

        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError depending on the version
            raise VaceError(f"The embedded tokenizer model is not a valid sentencepiece model ({e})") from e

    def __call__(self, text: str) -> list[int]:
        return self.processor.encode(text, add_eos=True)


class ByteTokenizer:
    """Demo tokenizer of the embedded tiny encoder: UTF-8 bytes shifted past pad (0) and EOS (1)."""

    vocab_size = 258

    def __call__(self, text: str) -> list[int]:
        return [b + 2 for b in text.encode("utf-8")] + [1]


def folder_tokenizer(folder: Path) -> Tokenizer:
    """`spiece.model` through sentencepiece (as ComfyUI does); otherwise transformers' `tokenizer.json`."""
    if (folder / "spiece.model").is_file():
        return SentencePieceTokenizer((folder / "spiece.model").read_bytes())
    if not (folder / "tokenizer.json").is_file():
        raise VaceError(f"No tokenizer in {folder}: expected umt5-xxl's spiece.model or tokenizer.json")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return lambda text: tokenizer(text).input_ids


def tokenizer_from_path(path: str | Path) -> Tokenizer:
    """A tokenizer folder or a sentencepiece `.model` file."""
    path = Path(path)
    if path.is_dir():
        return folder_tokenizer(path)
    if not path.is_file():
        raise VaceError(f"Tokenizer not found: {path}")
    return SentencePieceTokenizer(path.read_bytes())


class TextEncoder:
    """UMT5 encoder + tokenizer. `encode(prompt)` -> (L, d_model) float32 features on the CPU, L <= 512."""

    def __init__(self, model, tokenizer: Tokenizer, max_length: int = TEXT_LEN):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    def token_ids(self, prompt: str) -> list[int]:
        """Cleaned, tokenized, truncated to max_length keeping the final EOS (as the official truncation)."""
        ids = self.tokenizer(clean_text(prompt))
        return ids if len(ids) <= self.max_length else ids[: self.max_length - 1] + ids[-1:]

    @torch.no_grad()
    def encode(self, prompt: str) -> Tensor:
        """An empty prompt is allowed: it encodes to the EOS token alone (L = 1)."""
        device = self.model.shared.weight.device
        ids = torch.tensor([self.token_ids(prompt)], device=device)
        hidden = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        return hidden[0].float().cpu()  # (L, d_model)

    def encode_negative(self, prompt: str | None = None) -> Tensor:
        return self.encode(resolve_negative_prompt(prompt))


# Official Wan module names -> transformers' T5 names (per block N; Wan's `ffn.gate.0` is the GELU branch).
OFFICIAL_TO_HF = [
    (r"token_embedding\.weight", "shared.weight"),
    (r"norm\.weight", "encoder.final_layer_norm.weight"),
    (r"blocks\.(\d+)\.norm1\.", r"encoder.block.\1.layer.0.layer_norm."),
    (r"blocks\.(\d+)\.attn\.", r"encoder.block.\1.layer.0.SelfAttention."),
    (r"blocks\.(\d+)\.pos_embedding\.embedding\.",
     r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias."),
    (r"blocks\.(\d+)\.norm2\.", r"encoder.block.\1.layer.1.layer_norm."),
    (r"blocks\.(\d+)\.ffn\.gate\.0\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_0."),
    (r"blocks\.(\d+)\.ffn\.fc1\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_1."),
    (r"blocks\.(\d+)\.ffn\.fc2\.", r"encoder.block.\1.layer.1.DenseReluDense.wo."),
]


def official_to_hf(key: str) -> str:
    for pattern, replacement in OFFICIAL_TO_HF:
        new, count = re.subn(f"^{pattern}", replacement, key)
        if count:
            return new
    return key


def encoder_state_dict(state_dict: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """Any supported layout -> the encoder's transformers keys in `dtype` (fp8 dequantised, no decoder)."""
    if "token_embedding.weight" in state_dict:
        state_dict = {official_to_hf(k): v for k, v in state_dict.items()}
    # full encoder-decoder files also hold decoder.*/lm_head.*; encoder.embed_tokens is tied to shared
    tied = "encoder.embed_tokens.weight"
    state_dict = {k: v for k, v in state_dict.items()
                  if (k.startswith("encoder.") and k != tied) or k.startswith("shared.")}
    return dequantize(drop_fp8_markers(state_dict), dtype)


def block_key(n: int, name: str) -> str:
    return f"encoder.block.{n}.layer.{name}.weight"


def infer_config(state_dict: dict[str, Tensor]):
    """UMT5Config from the weights: every UMT5 block has its own relative-attention table (buckets x heads);
    T5 v1.1 has it only in block 0, which is how the two are told apart."""
    from transformers import UMT5Config

    if "shared.weight" not in state_dict or block_key(0, "0.SelfAttention.q") not in state_dict:
        raise VaceError("Not a UMT5/T5 text encoder: `shared.weight` or `encoder.block.0...` is missing. "
                        "Wan needs umt5-xxl (ComfyUI's umt5_xxl_*.safetensors or the official .pth).")
    num_layers = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("encoder.block."))
    last_bias = block_key(num_layers - 1, "0.SelfAttention.relative_attention_bias")
    if last_bias not in state_dict or block_key(0, "1.DenseReluDense.wi_0") not in state_dict:
        raise VaceError("This is a T5 encoder, not UMT5 (relative attention only in block 0, or no gated "
                        "FFN): Wan uses umt5-xxl, e.g. umt5_xxl_fp16.safetensors or "
                        "umt5_xxl_fp8_e4m3fn_scaled.safetensors.")
    vocab_size, d_model = state_dict["shared.weight"].shape
    num_buckets, num_heads = state_dict[last_bias].shape
    return UMT5Config(
        vocab_size=vocab_size, d_model=d_model, num_layers=num_layers, num_heads=num_heads,
        d_kv=state_dict[block_key(0, "0.SelfAttention.q")].shape[0] // num_heads,
        d_ff=state_dict[block_key(0, "1.DenseReluDense.wi_0")].shape[0],
        relative_attention_num_buckets=num_buckets, relative_attention_max_distance=MAX_DISTANCE,
        feed_forward_proj="gated-gelu", dropout_rate=0.0,
    )


def build_model(state_dict: dict[str, Tensor], config, device: str | torch.device):
    """UMT5EncoderModel holding `state_dict`'s tensors (built on the meta device: no 2nd copy of 11 GB)."""
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise VaceError(f"The text encoder weights do not fit their config: {e}") from e
    missing = [k for k in missing if k != "encoder.embed_tokens.weight"]
    if missing or unexpected:
        raise VaceError(f"Text encoder weights incomplete or foreign: missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]} ({len(missing)} / {len(unexpected)} keys)")
    model.set_input_embeddings(model.shared)  # re-tie encoder.embed_tokens to the loaded table
    return model.to(device).eval().requires_grad_(False)


def load_text_encoder(
    path: str | Path,
    tokenizer: str | Path | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> TextEncoder:
    """A UMT5 text encoder from a ComfyUI/official file or a transformers folder (see the module doc).
    `tokenizer` (a folder or a sentencepiece .model file) overrides the one found with the weights.
    Weights are stored as `dtype` (bf16 as the official code; fp32 for exact comparisons)."""
    path = Path(path)
    if not path.exists():
        raise VaceError(f"Text encoder not found: {path}")
    config = None
    if path.is_dir() and (path / "config.json").is_file():
        from transformers import UMT5Config

        config = UMT5Config.from_json_file(str(path / "config.json"))
        weights = read_weights(path)
    elif path.is_dir() and (path / OFFICIAL_T5_FILE).is_file():
        weights = read_weights(path / OFFICIAL_T5_FILE)
    elif path.is_dir():
        raise VaceError(f"Folder {path} holds neither config.json (transformers layout) nor "
                        f"{OFFICIAL_T5_FILE} (official Wan layout)")
    else:
        weights = read_weights(path)
    spiece = weights.pop(SPIECE_KEY, None)
    if tokenizer is not None:
        tokenize = tokenizer_from_path(tokenizer)
    elif spiece is not None:
        tokenize = SentencePieceTokenizer(spiece.numpy().tobytes())
    elif path.is_dir():
        found = path / OFFICIAL_TOKENIZER_DIR
        tokenize = folder_tokenizer(found if found.is_dir() else path)
    elif (path.parent / OFFICIAL_TOKENIZER_DIR).is_dir():
        tokenize = folder_tokenizer(path.parent / OFFICIAL_TOKENIZER_DIR)
    else:
        raise VaceError(f"{path.name} holds no tokenizer (no `{SPIECE_KEY}` key): pass tokenizer= a "
                        "google/umt5-xxl folder or its spiece.model, or use ComfyUI's "
                        "umt5_xxl_*.safetensors, which embed it.")
    state_dict = encoder_state_dict(weights, dtype)
    model = build_model(state_dict, config or infer_config(state_dict), device)
    return TextEncoder(model, tokenize)


TINY_TEXT_DIM = 64  # the embedded tiny DiT's text_dim


def tiny_text_encoder(seed: int = 0) -> TextEncoder:
    """For demos and tests only: a tiny random UMT5 (d_model 64) with a byte tokenizer. Its features carry no
    meaning; the same seed gives the same weights on every machine (CPU init under a private seed)."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=ByteTokenizer.vocab_size, d_model=TINY_TEXT_DIM, d_kv=16, d_ff=128, num_layers=2,
        num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=MAX_DISTANCE,
        dropout_rate=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(config).eval().requires_grad_(False)
    return TextEncoder(model, ByteTokenizer())
