"""The VACE Speed node in a real ComfyUI server: all switches off gives the latent of a graph without the node, bit
for bit; lean + chunked FFN reaches the model (the sampler logs the switches it set) and stays within float
rounding; fp8 compute on fp8 weights changes the latent by the fp8 matmuls' error (and back off, the exact latent
returns: the switches travel with the socket, the shared model is reset); fp8 compute on fp16 weights is refused
by name."""

import pytest
import torch

from tests.integration.comfy_server import messages
from tests.integration.fixtures import write_inputs, write_models
from tests.integration.graphs import FRAMES, H, W
from tests.integration.native_graphs import run_latent
from tests.test_comfy_caching_experts import latent_graph

OFF = {"compile": False, "lean": False, "ffn_chunk": 0, "fp8_compute": False}


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_speed_node")
    write_models(base)
    write_inputs(base, H, W, FRAMES)
    with comfy_server.serving(base) as server:
        yield server


def with_speed(prompt: dict, weight_dtype: str = "default", **switches) -> dict:
    prompt["model"]["inputs"]["weight_dtype"] = weight_dtype
    if switches:
        prompt["speed"] = {"class_type": "VACESpeed", "inputs": {"vace_model": ["model", 0], **OFF, **switches}}
        prompt["sample"]["inputs"]["vace_model"] = ["speed", 0]
    return prompt


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_speed_switches_off_are_exact_and_on_reach_the_model(comfy):
    plain, _ = run_latent(comfy, latent_graph())
    off, _ = run_latent(comfy, with_speed(latent_graph(), **OFF))
    torch.testing.assert_close(off, plain, rtol=0, atol=0)
    lean, _ = run_latent(comfy, with_speed(latent_graph(), lean=True, ffn_chunk=256))
    assert "VACE speed switches set: Speed(compile=False, compile_mode=None, lean=True, ffn_chunk=256, " \
           "fp8_compute=False)" in comfy.log_tail(200_000)
    assert rel(lean, plain) < 1e-4  # the same math up to float rounding
    fp8_plain, _ = run_latent(comfy, with_speed(latent_graph(), "fp8_e4m3fn"))
    fp8, _ = run_latent(comfy, with_speed(latent_graph(), "fp8_e4m3fn", fp8_compute=True))
    assert torch.isfinite(fp8).all() and 1e-3 < rel(fp8, fp8_plain) < 0.5  # activations quantised to e4m3 too
    back, _ = run_latent(comfy, with_speed(latent_graph(), "fp8_e4m3fn", **OFF))
    torch.testing.assert_close(back, fp8_plain, rtol=0, atol=0)


def test_fp8_compute_without_fp8_weights_is_refused(comfy):
    entry = comfy.run(with_speed(latent_graph(), fp8_compute=True), timeout=600)
    assert entry["status"]["status_str"] == "error"
    error = messages(entry)["execution_error"]
    assert error["node_type"] == "VACESpeed"
    assert "fp8 compute multiplies fp8 e4m3 weights, and this model holds none" in error["exception_message"]
