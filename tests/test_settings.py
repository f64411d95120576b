"""Settings declared once (vace_core/settings.py): every node input and command-line flag of a setting agrees with
its knob (default, range, choices, help), the command line refuses out-of-range values before anything loads,
with the node's range in the message, and the speed switches reach the model from the command line."""

import pytest

from tests.integration.node_schemas import node_schemas
from vace_core import __main__ as cli
from vace_core.__main__ import parser
from vace_core.checkpoints import LoadSettings
from vace_core.easycache import EasyCache
from vace_core.errors import VaceError
from vace_core.experts import Experts
from vace_core.guidance_options import GuidanceOptions
from vace_core.long_video import LongVideoSettings
from vace_core.magcache import MagCache
from vace_core.pipeline import FEATHER, SamplerSettings
from vace_core.regional import Regions
from vace_core.sampling.guidance import CURVE_KNOBS, STREAM_KNOBS
from vace_core.sampling.presets import PRESETS
from vace_core.settings import Knob, knobs
from vace_core.speed import Speed
from vace_core.step_cache import TeaCache
from vace_core.tasks import TaskInputs

SAMPLERS = ("VACESampler", "VACELongVideoSampler", "VACESaveJob")
SIZED = ("VACEBuildVCU", "VACEFramePlacement")
SOLVER_LABELS = {"unipc": "unipc", "euler": "euler", "dpm++_2m": "dpmpp_2m", "lcm": "lcm"}
CACHE_MODE_LABELS = {"timestep embedding": "t_emb", "modulation (first 5 steps kept)": "e"}


def links():
    """(knob, [(node id, input id)], command-line flag, node labels -> knob choices): every declared knob."""
    sampler, long, regions = knobs(SamplerSettings), knobs(LongVideoSettings), knobs(Regions)
    cache, experts, load, size = knobs(TeaCache), knobs(Experts), knobs(LoadSettings), knobs(TaskInputs)
    easy = knobs(EasyCache)
    rows = [
        (sampler["steps"], [(n, "steps") for n in SAMPLERS], "--steps", None),
        (sampler["guidance"], [(n, "cfg") for n in SAMPLERS], "--cfg", None),
        (sampler["shift"], [(n, "shift") for n in SAMPLERS], "--shift", None),
        (sampler["solver"], [(n, "sampler") for n in SAMPLERS], "--sampler", SOLVER_LABELS),
        (sampler["seed"], [(n, "seed") for n in SAMPLERS], "--seed", None),
        *((sampler[name], [(n, name) for n in SAMPLERS], "--" + name.replace("_", "-"), None)
          for name in ("reference_weight", "reference_decay")),
        (sampler["denoise"], [(n, "denoise") for n in SAMPLERS], "--denoise", None),
        *((spec, [(n, name + suffix) for n in SAMPLERS for suffix in ("", "_2", "_3")], f"--{name}", None)
          for name, spec in STREAM_KNOBS.items()),
        *((spec, [(n, name + suffix) for n in SAMPLERS for suffix in ("", "_2", "_3")], flag, None)
          for (name, spec), flag in zip(CURVE_KNOBS.items(), ("--strength-curve", "--frame-weights"), strict=True)),
        *((spec, [("VACEGuidance", name)], "--" + name.replace("_", "-"), None)
          for name, spec in knobs(GuidanceOptions).items()),
        *((spec, [("VACELongVideoSampler", name)], "--colour" if name == "colour_method" else
           "--" + name.replace("_", "-"), None) for name, spec in long.items()),
        (regions["self_strength"], [("VACERegionalPrompts", "self_strength")], "--region-strength", None),
        (regions["cross_strength"], [("VACERegionalPrompts", "cross_strength")], "--region-strength", None),
        (regions["end"], [("VACERegionalPrompts", "end")], "--region-end", None),
        (regions["context_blocks"], [("VACERegionalPrompts", "context_blocks")], "--region-context-blocks", None),
        (regions["soft_edges"], [("VACERegionalPrompts", "soft_edges")], "--region-soft-edges", None),
        (cache["threshold"], [("VACEStepCache", "threshold")], "--teacache", None),
        (cache["mode"], [("VACEStepCache", "mode")], "--teacache-mode", CACHE_MODE_LABELS),
        (cache["context_every_step"], [("VACEStepCache", "context_every_step")], "--teacache-context-every-step",
         None),
        *((spec, [("VACEMagCache", name)], flag, None) for (name, spec), flag in
          zip(knobs(MagCache).items(), ("--magcache", "--magcache-retention", "--magcache-k"), strict=True)),
        (easy["threshold"], [("VACEEasyCache", "threshold")], "--easycache", None),
        (easy["warmup"], [("VACEEasyCache", "warmup")], "--easycache-warmup", None),
        (experts["guidance_low"], [("VACEWan22LowNoiseExpert", "cfg")], "--cfg-low", None),
        (experts["boundary"], [("VACEWan22LowNoiseExpert", "boundary")], "--boundary", None),
        *((load[name], [("VACEModelLoader", name)], "--" + name.replace("_", "-"), None)
          for name in ("weight_dtype", "compute_dtype", "attention")),
        (load["vae_dtype"], [("VACEVAELoader", "dtype")], "--vae-dtype", None),
        *((spec, [("VACESpeed", name)], "--" + name.replace("_", "-"), None) for name, spec in knobs(Speed).items()),
        *((size[name], [(n, name) for n in SIZED], f"--{name}", None) for name in ("width", "height", "length")),
        (FEATHER, [("VACELongVideoSampler", "feather"), ("VACEDecode", "feather")], "--composite", None),
    ]
    return rows


# the command line's own defaults where it has a reason to differ from the knob's
CLI_DEFAULTS = {"--steps": None, "--cfg": None, "--shift": None, "--sampler": None,  # None: the --preset's
                "--teacache": 0.0, "--magcache": 0.0,  # off unless asked for (the node is on by being connected)
                "--easycache": 0.0,  # same
                "--cfg-low": None,  # 3, or a speed-LoRA preset's cfg (see __main__._guidance_low)
                "--composite": None}  # no paste-back unless asked for
# node widgets of these nodes that are no knob, and why
NODE_ONLY = {("VACESampler", "offload_after"): "a server's memory choice; the command line exits after the run",
             ("VACELongVideoSampler", "offload_after"): "same",
             ("VACELongVideoSampler", "paste_kept"): "--composite FEATHER (paste_kept + feather in one flag)",
             ("VACEStepCache", "coefficients"): "--teacache-coefficients (labels checked below)",
             ("VACEModelLoader", "block_swap"): "ComfyUI's partial loading; the command line has --fsdp instead",
             ("VACELongVideoSampler", "save_state"): "--save-state FILE (a path where the node picks output/)",
             ("VACELongVideoSampler", "rerender_window"): "--rerender WINDOW (with --job STATE)",
             ("VACELongVideoSampler", "later_windows"): "--later"}
CHECKED_NODES = {"VACESampler", "VACELongVideoSampler", "VACERegionalPrompts", "VACEStepCache", "VACEMagCache",
                 "VACEEasyCache", "VACEGuidance", "VACEWan22LowNoiseExpert", "VACEModelLoader", "VACEVAELoader",
                 "VACESpeed", "VACESaveJob"}


def run_actions():
    sub = next(a for a in parser()._actions if a.dest == "command")
    return {flag: action for action in sub.choices["run"]._actions for flag in action.option_strings}


def node_problems(spec: Knob, inp: dict, labels: dict | None) -> list[str]:
    expected = {"tooltip": spec.help}
    if spec.choices:
        labels = labels or {c: c for c in spec.choices}
        expected |= {"type": "COMBO", "default": next(k for k, v in labels.items() if v == spec.default)}
        if sorted(labels.values()) != sorted(spec.choices) or inp.get("options") != list(labels):
            return [f"options {inp.get('options')} vs choices {spec.choices}"]
    elif spec.kind is bool:
        expected |= {"type": "BOOLEAN", "default": spec.default}
    elif spec.kind is str:
        expected |= {"type": "STRING", "default": spec.default}
    else:
        expected |= {"type": "INT" if spec.kind is int else "FLOAT", "default": spec.default, "min": spec.min,
                     "max": spec.max, "step": spec.step}
    return [f"{k}: node {inp.get(k)!r} vs knob {v!r}" for k, v in expected.items() if inp.get(k) != v]


def cli_problems(spec: Knob, action, flag: str) -> list[str]:
    if spec.kind is bool:
        return [] if action.const is True and action.default is False else ["not a switch that defaults to off"]
    default = CLI_DEFAULTS.get(flag, spec.default)
    if spec.kind is str and not spec.choices:  # free text, parsed where it is used
        return [] if action.default == default and action.type is None else [f"default {action.default!r}"]
    if flag == "--region-strength":
        default = (knobs(Regions)["self_strength"].default, knobs(Regions)["cross_strength"].default)
    problems = [] if action.default == default else [f"default {action.default!r} vs {default!r}"]
    if spec.choices:
        return problems + ([] if tuple(action.choices) == spec.choices else [f"choices {action.choices}"])
    checker = getattr(action.type, "__self__", None)  # the flag's values go through a knob's parse
    if checker is None or (checker.min, checker.max, checker.kind) != (spec.min, spec.max, spec.kind):
        problems.append(f"values not checked against {spec.range_text()} (type {action.type})")
    return problems


def drift(schemas: dict) -> list[str]:
    actions, problems = run_actions(), []
    for spec, inputs, flag, labels in links():
        for node, name in inputs:
            inp = next((i for i in schemas[node] if i["id"] == name), None)
            found = ["missing"] if inp is None else node_problems(spec, inp, labels)
            problems += [f"{node}.{name} ({spec.name}): {p}" for p in found]
        found = ["missing"] if flag not in actions else cli_problems(spec, actions[flag], flag)
        problems += [f"{flag} ({spec.name}): {p}" for p in found]
    linked = {pair for _, inputs, _, _ in links() for pair in inputs}
    for node in CHECKED_NODES:
        for inp in schemas[node]:
            widget = inp["type"] in ("INT", "FLOAT", "BOOLEAN", "COMBO") and not inp["id"].endswith("_name")
            if widget and (node, inp["id"]) not in linked | NODE_ONLY.keys() and inp["id"] != "base_model":
                problems.append(f"{node}.{inp['id']}: a node knob with no declaration (and no flag)")
    return problems


@pytest.fixture(scope="module")
def schemas(comfy_runtime):
    return node_schemas(comfy_runtime)


def test_every_node_input_and_flag_matches_its_knob(schemas):
    assert drift(schemas) == []


def test_drift_is_caught(schemas, monkeypatch):
    """The check above can fail: a node range, a flag default and a tooltip changed one at a time."""
    broken = {node: [dict(i) for i in inputs] for node, inputs in schemas.items()}
    next(i for i in broken["VACESampler"] if i["id"] == "cfg")["min"] = 0.0
    assert drift(broken) == ["VACESampler.cfg (guidance): min: node 0.0 vs knob 1.0"]
    next(i for i in broken["VACESampler"] if i["id"] == "cfg")["min"] = 1.0
    next(i for i in broken["VACERegionalPrompts"] if i["id"] == "end")["tooltip"] = "other words"
    assert drift(broken) == [f"VACERegionalPrompts.end (end): tooltip: node 'other words' vs knob "
                             f"{knobs(Regions)['end'].help!r}"]
    monkeypatch.setitem(CLI_DEFAULTS, "--boundary", 0.9)  # as if the flag's default had drifted from the knob's
    assert drift(schemas) == ["--boundary (boundary): default 0.875 vs 0.9"]


def test_drift_in_the_guidance_cache_and_curve_inputs_is_caught(schemas):
    """The issue-20 nodes are held too: a VACE Guidance range, a MagCache default, a stream curve's default (on the
    third stream of the Long Video Sampler) and an undeclared widget on the VACE Guidance node."""
    broken = {node: [dict(i) for i in inputs] for node, inputs in schemas.items()}
    next(i for i in broken["VACEGuidance"] if i["id"] == "nag_scale")["max"] = 100.0
    next(i for i in broken["VACEMagCache"] if i["id"] == "k")["default"] = 3
    next(i for i in broken["VACELongVideoSampler"] if i["id"] == "curve_3")["default"] = "0:1, 1:0"
    broken["VACEGuidance"].append({"id": "pag_scale", "type": "FLOAT", "default": 0.0})
    assert sorted(drift(broken)) == sorted([
        "VACEGuidance.nag_scale (nag_scale): max: node 100.0 vs knob 50.0",
        "VACEMagCache.k (k): default: node 3 vs knob 2",
        "VACELongVideoSampler.curve_3 (curve): default: node '0:1, 1:0' vs knob ''",
        "VACEGuidance.pag_scale: a node knob with no declaration (and no flag)"])


def test_step_cache_coefficient_labels_name_the_same_sizes(schemas):
    from vace_core.step_cache import SIZES

    node = next(i for i in schemas["VACEStepCache"] if i["id"] == "coefficients")
    assert len(node["options"]) == len(SIZES) and run_actions()["--teacache-coefficients"].choices == list(SIZES)


def test_knob_defaults_are_the_official_settings():
    """The sampler's knobs are the official VACE preset; the two region strengths share one flag, so one range."""
    sampler, official = knobs(SamplerSettings), PRESETS["official"]
    assert (sampler["steps"].default, sampler["guidance"].default, sampler["shift"].default,
            sampler["solver"].default) == official[:4]
    regions = knobs(Regions)
    assert (regions["self_strength"].min, regions["self_strength"].max) == \
           (regions["cross_strength"].min, regions["cross_strength"].max)


@pytest.mark.parametrize(("flags", "message"), [
    (["--width", "-64"], "argument --width: -64 is outside the range from 16 to 4096 (as on the node)"),
    (["--cfg", "-5"], "argument --cfg: -5 is outside the range from 1 to 30 (as on the node)"),
    (["--cfg", "nan"], "argument --cfg: nan is not a finite number; the range is from 1 to 30 (as on the node)"),
    (["--carry-guidance", "nan"],
     "argument --carry-guidance: nan is not a finite number; the range is from 0 to 10 (as on the node)"),
    (["--boundary", "5"], "argument --boundary: 5 is outside the range from 0 to 1 (as on the node)"),
    (["--steps", "2.5"], "argument --steps: '2.5' is not a whole number; the range is from 1 to 200 (as on the node)"),
    (["--region-strength", "0.3", "inf"],
     "argument --region-strength: inf is not a finite number; the range is from 0 to 10 (as on the node)"),
    (["--window", "300"], "argument --window: 300 is outside the range from 5 to 257 (as on the node)"),
    (["--composite", "-3"], "argument --composite: -3 is outside the range from 0 to 256 (as on the node)"),
    (["--nag-scale", "-1"], "argument --nag-scale: -1 is outside the range from 0 to 50 (as on the node)"),
    (["--magcache-k", "0"], "argument --magcache-k: 0 is outside the range from 1 to 10 (as on the node)"),
    (["--combination", "pag"], "argument --combination: invalid choice: 'pag' (choose from 'cfg', 'cfg-zero*', 'apg')"),
    (["--ffn-chunk", "8"], "error: ffn_chunk 8: chunking the FFN needs lean on (--lean; the VACE Speed node's "
                           "lean): the chunks are written into the residual stream in place"),
])
def test_out_of_range_flags_are_refused_before_anything_loads(tmp_path, capsys, monkeypatch, flags, message):
    """In this process (a CLI process per case spent 2.5 s importing torch): `main` exits with the message, and any
    other exception would fail the test as a traceback would."""
    monkeypatch.setattr(cli, "_models", lambda args: pytest.fail("the models loaded before the flags were checked"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", *flags, "--out", str(tmp_path / "x.mp4")])
    code = exited.value.code
    assert code not in (0, None)
    stderr = capsys.readouterr().err + (code if isinstance(code, str) else "")
    assert stderr.strip().splitlines()[-1].endswith(message)


def test_knobs_hold_library_values_too():
    with pytest.raises(VaceError, match="the expert boundary: 5 is outside the range from 0 to 1"):
        Experts(None, None, boundary=5)
    with pytest.raises(VaceError, match="carry_guidance: nan is not a finite number"):
        LongVideoSettings(carry_guidance=float("nan")).check()
    with pytest.raises(VaceError, match="the TeaCache mode: 'magic' is not one of t_emb, e"):
        TeaCache(0.1, mode="magic")
    with pytest.raises(TypeError):  # keyword construction: no 13-positional-argument calls
        LongVideoSettings(81, 5)


def capture_model(monkeypatch):
    from vace_core import tasks

    seen = {}

    def run(inputs, model, *args, **kwargs):
        seen.update(model=model, inputs=inputs, settings=args[3] if len(args) > 3 else kwargs.get("settings"))
        raise SystemExit(0)
    monkeypatch.setattr(tasks, "run", run)
    return seen


def test_speed_flags_reach_the_model_and_off_leaves_it_untouched(monkeypatch, tmp_path):
    from vace_core.__main__ import main

    seen = capture_model(monkeypatch)
    with pytest.raises(SystemExit):
        main(["run", "--width", "16", "--height", "16", "--length", "5", "--out", str(tmp_path / "a.mp4")])
    assert not hasattr(seen["model"], "speed")  # off: the model as loaded, today's exact path
    with pytest.raises(SystemExit):
        main(["run", "--lean", "--ffn-chunk", "256", "--width", "16", "--height", "16", "--length", "5",
              "--out", str(tmp_path / "b.mp4")])
    model = seen["model"]
    assert model.speed == Speed(lean=True, ffn_chunk=256)
    assert all(b.lean and b.ffn_chunk == 256 for b in [*model.blocks, *model.vace_blocks])
    with pytest.raises(SystemExit):
        main(["run", "--compile", "--out", str(tmp_path / "d.mp4")])
    assert all("forward" in b.__dict__ for b in seen["model"].blocks)  # compiled per block (compiles on first call)
    with pytest.raises(SystemExit) as refused:  # the embedded model is fp32: fp8 compute would change nothing
        main(["run", "--fp8-compute", "--out", str(tmp_path / "c.mp4")])
    assert "fp8 compute multiplies fp8 e4m3 weights, and this model holds none" in str(refused.value)


def test_new_flags_reach_their_settings(monkeypatch, tmp_path):
    """--fused-weights, --colour-masked, the region switches and the stream's strength window."""
    from vace_core import long_video
    from vace_core.__main__ import main

    seen = capture_model(monkeypatch)
    longs = []
    monkeypatch.setattr(long_video.LongVideoSettings, "check", lambda self: longs.append(self))
    with pytest.raises(SystemExit):
        main(["run", "--fused-weights", "pyramid", "--colour-masked", "--region-context-blocks", "--region-soft-edges",
              "--strength", "0.7", "--start", "0.1", "--end", "0.9", "--teacache", "0.1", "--teacache-coefficients",
              "14B", "--out", str(tmp_path / "a.mp4")])
    assert longs[0].fused_weights == "pyramid" and longs[0].colour_masked
    inputs = seen["inputs"]
    assert inputs.region_settings["context_blocks"] and inputs.region_settings["soft_edges"]
    assert tuple(inputs.stream) == (0.7, 0.1, 0.9, None, None)  # no strength curve, no frame weights
    from vace_core.step_cache import COEFFICIENTS

    assert seen["settings"].step_cache.coefficients == COEFFICIENTS["t_emb", 5120]


def test_wan22_experts_get_the_switches_and_the_low_noise_cfg_default(monkeypatch, tmp_path):
    """Both experts get the speed switches; --cfg-low defaults to Wan2.2's 3 as the node does, or to a speed-LoRA
    preset's cfg (such LoRAs run both experts without guidance)."""
    from safetensors.torch import save_file

    from vace_core import __main__ as cli
    from vace_core.embedded import tiny_model

    for seed, name in enumerate(("high_noise_model", "low_noise_model")):
        (tmp_path / name).mkdir()
        save_file(tiny_model(seed).state_dict(), tmp_path / name / "diffusion_pytorch_model.safetensors")
    monkeypatch.setattr(cli, "_check_model_files", lambda args: None)
    seen = capture_model(monkeypatch)
    args = ["run", "--model", str(tmp_path), "--device", "cpu", "--out", str(tmp_path / "x.mp4")]
    for extra, guidance_low in (([], 3.0), (["--preset", "lightx2v"], 1.0), (["--cfg-low", "2"], 2.0)):
        with pytest.raises(SystemExit):
            cli.main([*args, "--lean", *extra])
        experts = seen["model"]
        assert experts.guidance_low == guidance_low
        assert experts.high.speed == experts.low.speed == Speed(lean=True)
