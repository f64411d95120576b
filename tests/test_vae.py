"""Wan2.1 VAE: parity with diffusers' AutoencoderKLWan, causal chunking, file formats, bad input."""

import types

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from safetensors.torch import save_file
from torch import nn

from vace_core.errors import VaceError
from vace_core.vae import (
    LATENTS_MEAN,
    LATENTS_STD,
    Tiling,
    WanVAE,
    diffusers_to_official,
    from_comfy_latent,
    load_vae,
    to_comfy_latent,
    vae_config,
)

TINY = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
MEAN = torch.tensor(LATENTS_MEAN).view(1, -1, 1, 1, 1)
STD = torch.tensor(LATENTS_STD).view(1, -1, 1, 1, 1)


def reference(seed: int = 0, **config) -> AutoencoderKLWan:
    """diffusers' VAE with random weights; norm gammas randomised too, so a misplaced gamma shows."""
    torch.manual_seed(seed)
    ref = AutoencoderKLWan(**config).eval()
    for name, p in ref.named_parameters():
        if name.endswith("gamma"):
            p.data.uniform_(0.5, 1.5)
    return ref


def ours_from(ref: AutoencoderKLWan, **kwargs) -> WanVAE:
    state_dict = diffusers_to_official(ref.state_dict())
    vae = WanVAE(**vae_config(state_dict), **kwargs).eval()
    vae.load_state_dict(state_dict, strict=True)
    return vae


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def ref_encode(ref: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (ref.encode(video).latent_dist.mode() - MEAN) / STD


def ref_decode(ref: AutoencoderKLWan, latent: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ref.decode(latent * STD + MEAN).sample


@pytest.fixture(scope="module")
def tiny_ref():
    return reference(**TINY)


@pytest.fixture(scope="module")
def tiny(tiny_ref):
    return ours_from(tiny_ref)


def video(frames=9, h=32, w=48, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, h, w, generator=g) * 2 - 1


def test_tiny_parity_encode_decode(tiny_ref, tiny):
    x = video(frames=9, batch=2)
    z = tiny.encode(x)
    assert z.shape == (2, 16, 3, 4, 6) and z.dtype == torch.float32
    assert rel_err(z, ref_encode(tiny_ref, x)) < 1e-5
    out = tiny.decode(z)
    assert out.shape == (2, 3, 9, 32, 48)
    assert rel_err(out, ref_decode(tiny_ref, z)) < 1e-5
    assert torch.equal(out, tiny.decode(z))  # deterministic


def test_real_width_parity_and_official_keys():
    """base_dim 96, dim_mult (1,2,4,4), 2 res blocks: every real key name, both ways through diffusers' own map."""
    ref = reference()
    vae = ours_from(ref)
    assert vae.config == dict(dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
                              temporal_downsample=(False, True, True))
    # our state dict is the official layout: diffusers' official->diffusers converter maps it onto its model
    converted = convert_wan_vae_to_diffusers(vae.state_dict())
    ref_sd = ref.state_dict()
    assert converted.keys() == ref_sd.keys()
    assert all(torch.equal(converted[k], ref_sd[k]) for k in ref_sd)
    x = video(frames=5, h=16, w=24)
    z = vae.encode(x)
    assert rel_err(z, ref_encode(ref, x)) < 1e-5
    assert rel_err(vae.decode(z), ref_decode(ref, z)) < 1e-5


def test_causal_chunks_never_see_the_future(tiny):
    """The first 1+4k frames encode to the same latents whatever follows, and decode likewise."""
    x = video(frames=13)
    z = tiny.encode(x)
    torch.testing.assert_close(tiny.encode(x[:, :, :5]), z[:, :, :2], rtol=0, atol=1e-6)
    out = tiny.decode(z)
    torch.testing.assert_close(tiny.decode(z[:, :, :2]), out[:, :, :5], rtol=0, atol=1e-6)
    single = tiny.encode(x[:, :, :1])  # an image is a 1-frame video
    assert single.shape == (1, 16, 1, 4, 6)
    torch.testing.assert_close(single, z[:, :, :1], rtol=0, atol=1e-6)


def test_comfy_latent_is_raw_vae_space(tiny_ref, tiny):
    x = video(frames=5)
    raw = to_comfy_latent(tiny.encode(x))
    with torch.no_grad():
        assert rel_err(raw, tiny_ref.encode(x).latent_dist.mode()) < 1e-5
    torch.testing.assert_close(from_comfy_latent(raw), tiny.encode(x), rtol=0, atol=1e-5)


def test_operations_namespace_builds_every_layer():
    """ComfyUI passes comfy.ops: every conv must come from the given namespace."""
    made = []

    def recorder(base):
        class Recorded(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                made.append(self)

        return Recorded

    ops = types.SimpleNamespace(Conv2d=recorder(nn.Conv2d), Conv3d=recorder(nn.Conv3d))
    vae = WanVAE(dim=3, dim_mult=(1, 1, 1, 1), num_res_blocks=1, operations=ops)
    convs = [m for m in vae.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert len(convs) == len(made) > 0 and all(m in made for m in convs)


# --- formats ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_ref, tiny):
    root = tmp_path_factory.mktemp("vae")
    official = tiny.state_dict()
    torch.save(official, root / "Wan2.1_VAE.pth")
    save_file(official, root / "wan_2.1_vae.safetensors")
    save_file({k: v.half() for k, v in official.items()}, root / "wan_2.1_vae_fp16.safetensors")
    save_file({k: v.bfloat16() for k, v in official.items()}, root / "wan_2.1_vae_bf16.safetensors")
    save_file({f"first_stage_model.{k}": v for k, v in official.items()} | {"model.diffusion_model.x": torch.zeros(1)},
              root / "all_in_one.safetensors")
    tiny_ref.save_pretrained(root / "pipeline" / "vae")  # a diffusers pipeline folder
    save_file(tiny_ref.state_dict(), root / "diffusers_vae.safetensors")
    return root


@pytest.mark.parametrize("name", ["Wan2.1_VAE.pth", "wan_2.1_vae.safetensors", "all_in_one.safetensors",
                                  "pipeline", "pipeline/vae", "diffusers_vae.safetensors"])
def test_every_format_loads_to_the_same_model(files, tiny_ref, name):
    vae = load_vae(files / name)
    assert vae.dtype == torch.float32
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    assert rel_err(vae.decode(z), ref_decode(tiny_ref, z)) < 1e-5


@pytest.mark.parametrize(("name", "dtype"), [("wan_2.1_vae_fp16.safetensors", torch.float16),
                                             ("wan_2.1_vae_bf16.safetensors", torch.bfloat16)])
def test_half_precision_files(files, tiny_ref, name, dtype):
    vae = load_vae(files / name)
    assert vae.dtype == dtype
    x = video(frames=5)
    z = vae.encode(x)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    assert rel_err(z, ref_encode(tiny_ref, x)) < 0.05
    assert load_vae(files / name, dtype=torch.float32).dtype == torch.float32


def test_pickle_is_loaded_safely(files, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unsafe code ran",))

    torch.save({"encoder.conv1.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(VaceError, match="Refusing to load .* the pickle holds more than tensors") as refused:
        load_vae(tmp_path / "evil.pth")
    assert "weights_only" not in str(refused.value)  # never advise lifting the protection


def test_not_a_wan21_vae(tmp_path, tiny):
    save_file({"model.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(VaceError, match="not a Wan2.1 VAE"):
        load_vae(tmp_path / "other.safetensors")
    sd = tiny.state_dict()
    sd["encoder.conv1.weight"] = torch.zeros(3, 12, 3, 3, 3)  # Wan2.2's VAE takes 12 (patchified) channels
    save_file(sd, tmp_path / "wan22.safetensors")
    with pytest.raises(VaceError, match="Wan2.2"):
        load_vae(tmp_path / "wan22.safetensors")
    sd = tiny.state_dict()
    del sd["decoder.head.2.bias"]
    save_file(sd, tmp_path / "truncated.safetensors")
    with pytest.raises(VaceError, match="(?s)do not match.*decoder.head.2.bias"):
        load_vae(tmp_path / "truncated.safetensors")


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "match"), [
    ((1, 4, 5, 32, 32), r"shape \(batch, 3, frames"),
    ((3, 5, 32, 32), r"shape \(batch, 3, frames"),
    ((1, 3, 5, 36, 32), r"32x36 \(WxH\) is not a multiple of 8: resize or crop to 32x32"),
    ((1, 3, 7, 32, 32), r"7 frames: the Wan VAE needs 4n\+1 frames .* Trim to 5 or extend to 9"),
    ((1, 3, 0, 32, 32), "empty"),
    ((0, 3, 5, 32, 32), "empty"),
])
def test_bad_video(tiny, shape, match):
    with pytest.raises(VaceError, match=match):
        tiny.encode(torch.zeros(shape))


@pytest.mark.parametrize(("shape", "match"), [
    ((1, 4, 2, 4, 4), r"latent of shape \(batch, 16"),
    ((1, 16, 0, 4, 4), "empty"),
])
def test_bad_latent(tiny, shape, match):
    with pytest.raises(VaceError, match=match):
        tiny.decode(torch.zeros(shape))


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(tile=100), "multiples of 8"),
    (dict(tile=8, overlap=0), "at least 16"),
    (dict(tile=64, overlap=40), "between 0 and half the tile"),
])
def test_bad_tiling(kwargs, match):
    with pytest.raises(VaceError, match=match):
        Tiling(**kwargs)


def test_bad_tiling_argument(tiny):
    with pytest.raises(VaceError, match="tiling must be None, 'auto' or a Tiling"):
        tiny.decode(torch.zeros(1, 16, 1, 4, 4), tiling=256)
