"""UMT5 text encoding: every file layout loads into features equal to transformers' UMT5EncoderModel run
directly on the same token ids; the tokenizer embedded in ComfyUI's file is used; cleaning, truncation and the
default negative prompt follow the official Wan code."""

import hashlib
import io

import pytest
import sentencepiece
import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from vace_core.embedded import TINY
from vace_core.errors import VaceError
from vace_core.text import (
    DEFAULT_NEGATIVE_PROMPT,
    TEXT_LEN,
    clean_text,
    load_text_encoder,
    tiny_text_encoder,
)

CORPUS = [
    "a cat walks on the grass in the sun", "the dog runs fast", "色调艳丽,过曝,静态,细节模糊不清",
    "a man boxing with a kitten", "slow motion video of waves", "static camera, low quality, blurry",
    "the quick brown fox jumps over the lazy dog",
] * 4
LINEARS = ("q.weight", "k.weight", "v.weight", "o.weight", "wi_0.weight", "wi_1.weight", "wo.weight")
PROMPTS = ["a cat runs on the grass", "", "  Slow   motion &amp; waves,\tstatic camera ", "色调艳丽，过曝"]


@pytest.fixture(scope="module")
def spm_bytes() -> bytes:
    """A real sentencepiece unigram model (T5's special ids: pad 0, eos 1, unk 2), trained in memory."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=64, model_type="unigram", pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, character_coverage=1.0, minloglevel=2)
    return model.getvalue()


def spm_ids(spm_bytes: bytes, text: str) -> list[int]:
    return sentencepiece.SentencePieceProcessor(model_proto=spm_bytes).encode(text, add_eos=True)


def reference_model(vocab_size: int, max_distance: int, seed: int = 0) -> UMT5EncoderModel:
    """The brief's tiny UMT5 with random weights (the norms randomised too, so a missed key would show)."""
    config = UMT5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=max_distance,
                        dropout_rate=0.0)
    torch.manual_seed(seed)
    model = UMT5EncoderModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def reference_features(model: UMT5EncoderModel, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).last_hidden_state[0]


def comfy_state_dict(model: UMT5EncoderModel) -> dict[str, torch.Tensor]:
    """ComfyUI's key names are transformers' T5 names without the tied `encoder.embed_tokens`."""
    return {k: v.clone() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def spiece_tensor(spm_bytes: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(spm_bytes), dtype=torch.uint8)


def save_comfy_file(model: UMT5EncoderModel, spm_bytes: bytes, path):
    save_file({**comfy_state_dict(model), "spiece_model": spiece_tensor(spm_bytes)}, path)


def assert_parity(encoder, reference: UMT5EncoderModel, spm_bytes: bytes):
    for prompt in PROMPTS:
        ids = spm_ids(spm_bytes, clean_text(prompt))
        assert encoder.token_ids(prompt) == ids
        features = encoder.encode(prompt)
        assert features.shape == (len(ids), 32) and features.dtype == torch.float32
        assert torch.equal(features, reference_features(reference, ids)), prompt


def test_comfy_file_matches_transformers(tmp_path, spm_bytes):
    # ComfyUI's files carry no max distance: real UMT5 (and ComfyUI's T5 code) use 128
    reference = reference_model(len(sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)), 128)
    save_comfy_file(reference, spm_bytes, tmp_path / "umt5.safetensors")
    encoder = load_text_encoder(tmp_path / "umt5.safetensors", dtype=torch.float32)
    assert encoder.model.config.num_heads == 4 and encoder.model.config.d_kv == 8
    assert encoder.model.config.relative_attention_num_buckets == 8 and encoder.model.config.d_ff == 37
    assert_parity(encoder, reference, spm_bytes)


def test_comfy_scaled_fp8_file_matches_dequantised_reference(tmp_path, spm_bytes):
    """Linear weights as fp8 with a float32 `scale_weight` (ComfyUI's scaled fp8), the embedding plain fp8."""
    reference = reference_model(len(sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)), 128)
    state_dict = comfy_state_dict(reference)
    quantised = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn),
                 "spiece_model": spiece_tensor(spm_bytes)}
    for key, value in state_dict.items():
        if key.endswith(LINEARS):
            scale = value.abs().amax() / torch.finfo(torch.float8_e4m3fn).max
            quantised[key] = (value / scale).to(torch.float8_e4m3fn)
            quantised[key.removesuffix("weight") + "scale_weight"] = scale.reshape(())
            state_dict[key] = quantised[key].float() * scale
        elif key == "shared.weight":
            quantised[key] = value.to(torch.float8_e4m3fn)
            state_dict[key] = quantised[key].float()
        else:
            quantised[key] = value
    save_file(quantised, tmp_path / "umt5_fp8_scaled.safetensors")
    reference.load_state_dict(state_dict, strict=False)  # the dequantised weights
    encoder = load_text_encoder(tmp_path / "umt5_fp8_scaled.safetensors", dtype=torch.float32)
    assert_parity(encoder, reference, spm_bytes)


def test_transformers_folder_with_spiece_model(tmp_path, spm_bytes):
    # config.json carries max distance 16: the folder's config, not the file default, must be used
    reference = reference_model(len(sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)), 16)
    reference.save_pretrained(tmp_path)
    (tmp_path / "spiece.model").write_bytes(spm_bytes)
    encoder = load_text_encoder(tmp_path, dtype=torch.float32)
    assert encoder.model.config.relative_attention_max_distance == 16
    assert_parity(encoder, reference, spm_bytes)


def test_transformers_folder_with_tokenizer_json(tmp_path, spm_bytes):
    """A folder with only tokenizer.json (a unigram tokenizers model holding the same pieces and scores)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    spm = sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)
    vocab = [(spm.id_to_piece(i), spm.get_score(i)) for i in range(len(spm))]
    backend = Tokenizer(models.Unigram(vocab, unk_id=spm.unk_id()))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(tmp_path)
    reference = reference_model(len(spm), 16)
    reference.save_pretrained(tmp_path)
    assert not (tmp_path / "spiece.model").exists()
    assert_parity(load_text_encoder(tmp_path, dtype=torch.float32), reference, spm_bytes)


# Official Wan module names, written out per key from wan/modules/t5.py (T5Encoder / T5SelfAttention)
def official_key(key: str) -> str:
    if key == "shared.weight":
        return "token_embedding.weight"
    if key == "encoder.final_layer_norm.weight":
        return "norm.weight"
    _, _, n, _, sub, *rest = key.split(".")
    name = ".".join(rest)
    return f"blocks.{n}." + {
        ("0", "layer_norm.weight"): "norm1.weight",
        ("0", "SelfAttention.q.weight"): "attn.q.weight",
        ("0", "SelfAttention.k.weight"): "attn.k.weight",
        ("0", "SelfAttention.v.weight"): "attn.v.weight",
        ("0", "SelfAttention.o.weight"): "attn.o.weight",
        ("0", "SelfAttention.relative_attention_bias.weight"): "pos_embedding.embedding.weight",
        ("1", "layer_norm.weight"): "norm2.weight",
        ("1", "DenseReluDense.wi_0.weight"): "ffn.gate.0.weight",
        ("1", "DenseReluDense.wi_1.weight"): "ffn.fc1.weight",
        ("1", "DenseReluDense.wo.weight"): "ffn.fc2.weight",
    }[(sub, name)]


def test_official_wan_pth_with_tokenizer_folder(tmp_path, spm_bytes):
    reference = reference_model(len(sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)), 128)
    official = {official_key(k): v.to(torch.bfloat16) for k, v in comfy_state_dict(reference).items()}
    torch.save(official, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    (tmp_path / "google" / "umt5-xxl").mkdir(parents=True)
    (tmp_path / "google" / "umt5-xxl" / "spiece.model").write_bytes(spm_bytes)
    bf16_weights = {k: v.to(torch.bfloat16).float() for k, v in comfy_state_dict(reference).items()}
    reference.load_state_dict(bf16_weights, strict=False)  # the reference holds the same bf16-rounded values
    for path in (tmp_path, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"):  # the model folder, or the file
        assert_parity(load_text_encoder(path, dtype=torch.float32), reference, spm_bytes)


def test_bf16_storage_close_to_fp32(tmp_path, spm_bytes):
    reference = reference_model(len(sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)), 128)
    save_comfy_file(reference, spm_bytes, tmp_path / "umt5.safetensors")
    encoder = load_text_encoder(tmp_path / "umt5.safetensors")  # default dtype: bf16 like the official code
    assert encoder.model.shared.weight.dtype == torch.bfloat16
    ids = spm_ids(spm_bytes, PROMPTS[0])
    expected = reference_features(reference, ids)
    error = (encoder.encode(PROMPTS[0]) - expected).abs().max() / expected.abs().max()
    assert error < 0.05, error


def test_clean_text_follows_official_whitespace_cleaning():
    # ftfy turns full-width punctuation into ASCII, html entities are unescaped twice, whitespace collapsed
    assert clean_text("  a &amp;amp; b\t\n\n c  ") == "a & b c"
    assert clean_text("色调艳丽，过曝") == "色调艳丽,过曝"


def test_truncation_keeps_eos_and_512_tokens():
    encoder = tiny_text_encoder()
    ids = encoder.token_ids("x" * 600)
    assert len(ids) == TEXT_LEN and ids[-1] == 1 and ids[:-1] == [ord("x") + 2] * (TEXT_LEN - 1)
    assert encoder.encode("x" * 600).shape == (TEXT_LEN, 64)


def test_empty_prompt_and_default_negative_prompt():
    encoder = tiny_text_encoder()
    assert encoder.token_ids("") == [1] and encoder.encode("").shape == (1, 64)
    default = encoder.encode(DEFAULT_NEGATIVE_PROMPT)
    assert torch.equal(encoder.encode_negative(None), default)
    assert torch.equal(encoder.encode_negative("  "), default)
    assert torch.equal(encoder.encode_negative("blurry"), encoder.encode("blurry"))
    # sha256 of Wan2.1's `sample_neg_prompt` (wan/configs/shared_config.py), taken from the official source
    digest = hashlib.sha256(DEFAULT_NEGATIVE_PROMPT.encode()).hexdigest()
    assert digest == "ce96e0324e4b54ce4b6e867f669ca520952e1a34cc116543516b1897f0d3c47e"


def test_tiny_encoder_is_deterministic_and_fits_the_tiny_dit():
    a, b, c = tiny_text_encoder(0), tiny_text_encoder(0), tiny_text_encoder(1)
    assert a.dim == TINY.text_dim == 64
    prompt = "a cat on the grass"
    assert torch.equal(a.encode(prompt), b.encode(prompt))
    assert not torch.allclose(a.encode(prompt), c.encode(prompt))
    assert a.encode(prompt).shape == (len(prompt.encode()) + 1, 64)


def test_errors_name_the_problem(tmp_path, spm_bytes):
    with pytest.raises(VaceError, match="not found.*missing.safetensors"):
        load_text_encoder(tmp_path / "missing.safetensors")
    reference = reference_model(len(sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)), 128)
    save_file(comfy_state_dict(reference), tmp_path / "no_tokenizer.safetensors")
    with pytest.raises(VaceError, match="holds no tokenizer"):
        load_text_encoder(tmp_path / "no_tokenizer.safetensors")
    # the same file works once a tokenizer is given
    (tmp_path / "spiece.model").write_bytes(spm_bytes)
    encoder = load_text_encoder(tmp_path / "no_tokenizer.safetensors", tokenizer=tmp_path / "spiece.model",
                                dtype=torch.float32)
    assert_parity(encoder, reference, spm_bytes)
    with pytest.raises(VaceError, match="Tokenizer not found"):
        load_text_encoder(tmp_path / "no_tokenizer.safetensors", tokenizer=tmp_path / "missing.model")
    save_file({**comfy_state_dict(reference), "spiece_model": torch.zeros(16, dtype=torch.uint8)},
              tmp_path / "bad_tokenizer.safetensors")
    with pytest.raises(VaceError, match="not a valid sentencepiece model"):
        load_text_encoder(tmp_path / "bad_tokenizer.safetensors")
    # T5 v1.1 keeps the relative-attention table only in block 0
    t5 = {k: v for k, v in comfy_state_dict(reference).items()
          if "block.1.layer.0.SelfAttention.relative" not in k}
    save_file({**t5, "spiece_model": spiece_tensor(spm_bytes)}, tmp_path / "t5.safetensors")
    with pytest.raises(VaceError, match="T5 encoder, not UMT5"):
        load_text_encoder(tmp_path / "t5.safetensors")
    save_file({"weight": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(VaceError, match="Not a UMT5/T5 text encoder"):
        load_text_encoder(tmp_path / "other.safetensors", tokenizer=tmp_path / "spiece.model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaceError, match="neither config.json"):
        load_text_encoder(tmp_path / "empty")
