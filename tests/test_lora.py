"""LoRA on the SSL Transformer: what trains, what is saved, merging, and the errors."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from train_helpers import make_corpus, tiny_config, write_config

from wespeaker_lap.bin import merge_lora as merge_bin
from wespeaker_lap.checks import ConfigError
from wespeaker_lap.export.exporter import export_model_dir
from wespeaker_lap.export.runtime import OnnxEmbedder
from wespeaker_lap.frontend import lora as lora_module
from wespeaker_lap.frontend.lora import (
    FINGERPRINT_KEY,
    check_lora_checkpoint,
    lora_state,
    merge_lora,
    parse_lora_args,
)
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.io.checkpoints import checkpoint_path, read_weights, save_weights
from wespeaker_lap.models import build_extractor
from wespeaker_lap.models.inference import load_trained_extractor
from wespeaker_lap.utils.config import load_config
from wespeaker_lap.utils.schedulers import param_groups
from wespeaker_lap.utils.trainer import build_model, initialise, seed_everything, train

LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0,
        "target_modules": ["q_proj", "v_proj", "out_proj", "intermediate_dense"]}


def _extractor_cfg(family="wavlm", lora=None, frozen=False, **frontend):
    return {"frontend": "ssl",
            "frontend_args": {"config": tiny_ssl_config(family), "frozen": frozen, **frontend},
            "model": "LAP_ASTP", "model_args": {"embed_dim": 16, "lap_dim": 32, "heads": 4},
            "lora_args": dict(LORA if lora is None else lora)}


def _randomise_lora_b(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def _batch():
    g = torch.Generator().manual_seed(1)
    return 0.1 * torch.randn(3, 16000, generator=g), torch.tensor([16000, 9000, 4000])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


# ----------------------------------------------------------------------- settings
def test_lora_args_are_type_checked():
    assert parse_lora_args({}) is None
    s = parse_lora_args({"rank": 2, "target_modules": "q_proj"})
    assert s.rank == 2 and s.target_modules == ("q_proj",)
    for bad, pattern in [({"rank": 0}, "rank"), ({"rank": 2.0}, "rank"),
                         ({"alpha": "x"}, "alpha"), ({"dropout": 1.0}, "dropout"),
                         ({"target_modules": []}, "target_modules"),
                         ({"target_modules": ["q_proj", 3]}, r"target_modules\[1\]"),
                         ({"ranks": 4}, "unknown key")]:
        with pytest.raises(ConfigError, match=pattern):
            parse_lora_args(bad)


def test_config_with_lora_needs_a_trainable_frontend(tmp_path, corpus):
    cfg = tiny_config(tmp_path / "exp", *corpus, lora_args=LORA)
    with pytest.raises(ConfigError, match="frozen: false"):
        load_config(write_config(tmp_path / "c.yaml", cfg))
    cfg["frontend_args"]["frozen"] = False
    cfg["lora_args"]["rank"] = -1
    with pytest.raises(ConfigError, match="lora_args.rank"):
        load_config(write_config(tmp_path / "c.yaml", cfg))


def test_unknown_target_module_lists_the_transformer_layers(tmp_path, corpus):
    with pytest.raises(ConfigError, match=r"\['qkv'\].*'intermediate_dense'.*'q_proj'"):
        build_extractor(_extractor_cfg(lora={"target_modules": ["q_proj", "qkv"]}))
    # a module outside the Transformer (the CNN's feature projection) is not a target either
    with pytest.raises(ConfigError, match="projection"):
        build_extractor(_extractor_cfg(lora={"target_modules": ["feature_projection"]}))
    # and training stops before any epoch
    cfg = tiny_config(tmp_path / "exp", *corpus, lora_args={"target_modules": ["nope"]})
    cfg["frontend_args"]["frozen"] = False
    with pytest.raises(ConfigError, match="nope"):
        train(load_config(write_config(tmp_path / "c.yaml", cfg)))
    assert not (tmp_path / "exp" / "models" / "model_1.pt").exists()


# -------------------------------------------------------------------- what trains
def test_only_lora_and_backend_parameters_train():
    model = build_model(_extractor_cfg() | {"projection_args": {"project_type": "softmax"}}, 4)
    train_names = {n for n, p in model.named_parameters() if p.requires_grad}
    ssl = [n for n in train_names if n.startswith("frontend.")]
    assert ssl and all(".lora_A." in n or ".lora_B." in n for n in ssl)
    assert any(n.startswith("backend.") for n in train_names)
    assert any(n.startswith("projection.") for n in train_names)
    frozen = [n for n, p in model.frontend.named_parameters() if not p.requires_grad]
    assert any(".feature_extractor." in n for n in frozen)
    assert any("q_proj.base_layer.weight" in n for n in frozen)
    # 2 layers x 4 targets x (A, B)
    assert len(ssl) == 16
    groups = param_groups(model, frontend_lr_ratio=10.0)
    lora_ids = {id(p) for n, p in model.named_parameters() if ".lora_" in n}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        if ids & lora_ids:
            assert ids <= lora_ids and g["lr_scale"] == 10.0
    assert sum(len(g["params"]) for g in groups) == len(train_names)


ATTN = ["q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"]
W2VBERT = ["linear_q", "linear_k", "linear_v", "linear_out", "intermediate_dense",
           "output_dense"]


@pytest.mark.parametrize(("family", "attention", "targets"), [
    ("wavlm", "sdpa", ATTN), ("wavlm", "eager", ATTN), ("hubert", "sdpa", ATTN),
    ("wav2vec2", "eager", ATTN), ("wav2vec2-bert", "sdpa", W2VBERT),
], ids=lambda x: x if isinstance(x, str) else "")
def test_merged_and_unmerged_give_the_same_embeddings(family, attention, targets):
    torch.manual_seed(0)
    ex = build_extractor(_extractor_cfg(family, lora={"rank": 4, "target_modules": targets},
                                        attention=attention))
    wrapped = sum(".lora_A." in n for n, _ in ex.named_parameters())
    assert wrapped >= len(targets) * ex.frontend.model.config.num_hidden_layers
    _randomise_lora_b(ex)
    ex.eval()
    wavs, lengths = _batch()
    with torch.no_grad():
        unmerged = ex(wavs, lengths)
        assert merge_lora(ex) == wrapped
        merged = ex(wavs, lengths)
    assert lora_state(ex.frontend) is None
    assert not any(".lora_" in n for n, _ in ex.named_parameters())
    assert torch.allclose(unmerged, merged, atol=1e-5), (unmerged - merged).abs().max()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_lora_acts_in_wavlm_attention_and_is_exact_at_zero(attention):
    """With B = 0 the LoRA model equals the plain one (eager: routed through the modules);
    with B != 0 it differs, so LoRA on the attention projections is not bypassed."""
    torch.manual_seed(0)
    plain = build_extractor(_extractor_cfg(lora={}, frozen=True, attention=attention)).eval()
    lora = build_extractor(_extractor_cfg(lora={"target_modules": ["q_proj", "v_proj"]},
                                          attention=attention)).eval()
    lora.backend.load_state_dict(plain.backend.state_dict())
    wavs, lengths = _batch()
    with torch.no_grad():
        a, b = plain(wavs, lengths), lora(wavs, lengths)
        assert torch.allclose(a, b, atol=1e-5)
        _randomise_lora_b(lora)
        assert (plain(wavs, lengths) - lora(wavs, lengths)).abs().max() > 1e-3


def test_w2vbert_default_targets_are_an_error_naming_its_layers():
    with pytest.raises(ConfigError, match="linear_q"):
        build_extractor(_extractor_cfg("wav2vec2-bert", lora={"rank": 2}))


# ----------------------------------------------------------- training and saving
def _lora_train_cfg(tmp_path, corpus, name="lora", **over):
    cfg = tiny_config(tmp_path / name, *corpus, num_epochs=1, lora_args=LORA,
                      finetune_args={"frontend_lr_ratio": 5.0},
                      scheduler_args={"initial_lr": 1e-2, "final_lr": 1e-3}, **over)
    cfg["frontend_args"]["frozen"] = False
    return load_config(write_config(tmp_path / f"{name}.yaml", cfg))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    tmp = tmp_path_factory.mktemp("lora_train")
    cfg = _lora_train_cfg(tmp, corpus)
    seed_everything(cfg["seed"])
    ref = build_model(cfg, num_class=4)
    result = train(cfg)
    return tmp, cfg, ref, result


def test_one_epoch_trains_lora_only_and_saves_only_it(trained):
    tmp, cfg, ref, result = trained
    before = dict(ref.frontend.named_parameters())
    after = dict(result.model.frontend.named_parameters())
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    assert moved and all(".lora_" in n for n in moved)
    assert any(".lora_B." in n for n in moved)

    models = tmp / "lora" / "models"
    for path in (checkpoint_path(models, 1), checkpoint_path(models, 1, "state")):
        sd = read_weights(path)
        fe = [k for k in sd if k.startswith("frontend.")]
        assert FINGERPRINT_KEY in sd
        assert all(".lora_" in k for k in fe if k != FINGERPRINT_KEY), fe
        assert len(fe) == 17  # 16 LoRA matrices + the fingerprint
        assert any(k.startswith("backend.") for k in sd)
        assert any(k.startswith("projection.") for k in sd)
    # a full fine-tune checkpoint of the same model holds the SSL weights too
    full_cfg = {k: v for k, v in cfg.items() if k != "lora_args"}
    full = build_model(full_cfg, num_class=4)
    save_weights(full, tmp / "full.pt")
    lora_size = checkpoint_path(models, 1).stat().st_size
    assert lora_size < 0.5 * (tmp / "full.pt").stat().st_size


def test_merge_tool_and_on_the_fly_merge_match_the_trained_model(trained):
    tmp, cfg, _, result = trained
    exp = tmp / "lora"
    save_weights(read_weights(checkpoint_path(exp / "models", 1)), exp / "models" / "avg_model.pt")
    assert merge_bin.main(["--model_dir", str(exp)]) == 0
    out = tmp / "lora_merged"
    assert merge_bin.main(["--model_dir", str(exp)]) == 1  # refuses to overwrite
    assert (out / "frontend.json").read_text() == (exp / "frontend.json").read_text()
    merged_sd = read_weights(out / "avg_model.pt")
    assert FINGERPRINT_KEY not in merged_sd
    assert not any(".lora_" in k for k in merged_sd)
    assert "frontend.model.encoder.layers.0.attention.q_proj.weight" in merged_sd
    assert "lora_args" not in (out / "config.yaml").read_text().split("# lora_args were")[1] \
        .split("\n", 1)[1]

    wavs, lengths = _batch()
    model = result.model.eval()
    with torch.no_grad():
        unmerged = model(wavs, lengths)
        on_the_fly = load_trained_extractor(exp / "config.yaml", exp / "models" / "avg_model.pt")
        from_dir = load_trained_extractor(out / "config.yaml", out / "avg_model.pt")
        assert lora_state(on_the_fly.frontend) is None
        for other in (on_the_fly(wavs, lengths), from_dir(wavs, lengths)):
            assert torch.allclose(unmerged, other, atol=1e-5), (unmerged - other).abs().max()


def test_checkpoint_of_another_ssl_model_is_refused(trained):
    tmp, cfg, _, _ = trained
    sd = read_weights(checkpoint_path(tmp / "lora" / "models", 1))
    other = dict(cfg, frontend_args=dict(cfg["frontend_args"], init_seed=5))
    with pytest.raises(ValueError, match="fingerprint"):
        load_trained_extractor(other, None).load_trained_weights(sd)
    ckpt = str(checkpoint_path(tmp / "lora" / "models", 1))
    with pytest.raises(ValueError, match="fingerprint"):
        initialise(build_model(other, num_class=4), dict(other, model_init=ckpt),
                   resuming=False)
    check_lora_checkpoint(build_model(cfg, num_class=4), sd)  # the right model passes


def test_lora_experiment_with_another_ssl_model_is_refused(trained, tmp_path):
    """The experiment's frontend.json is checked with the weights: LoRA needs its own base."""
    tmp, _, _, _ = trained
    exp = tmp_path / "lora"
    shutil.copytree(tmp / "lora", exp)
    raw = yaml.safe_load((exp / "config.yaml").read_text())
    raw["frontend_args"]["init_seed"] = 5
    (exp / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="differs|fingerprint"):
        load_trained_extractor(exp / "config.yaml", checkpoint_path(exp / "models", 1))


def test_phase3_starts_from_phase2_lora_and_refuses_a_full_fine_tune(trained, tmp_path):
    tmp, cfg, _, result = trained
    ckpt = checkpoint_path(tmp / "lora" / "models", 1)
    model = build_model(cfg, num_class=4)
    initialise(model, dict(cfg, model_init=str(ckpt)), resuming=False)
    want = {n: p for n, p in result.model.named_parameters() if ".lora_" in n}
    got = dict(model.named_parameters())
    assert all(torch.equal(want[n], got[n]) for n in want)

    full_cfg = {k: v for k, v in cfg.items() if k != "lora_args"}
    full = build_model(full_cfg, num_class=4)
    save_weights(full, tmp_path / "full.pt")  # trainable frontend: SSL weights saved
    with pytest.raises(ValueError, match="holds SSL model weights"):
        initialise(build_model(cfg, num_class=4), dict(cfg, model_init=str(tmp_path / "full.pt")),
                   resuming=False)


def test_bf16_inference_merges_then_casts(trained):
    tmp, _, _, result = trained
    exp = tmp / "lora"
    ckpt = checkpoint_path(exp / "models", 1)
    ex = load_trained_extractor(exp / "config.yaml", ckpt, dtype="bfloat16")
    assert next(ex.frontend.model.parameters()).dtype == torch.bfloat16
    wavs, lengths = _batch()
    with torch.no_grad():
        a = result.model.eval()(wavs, lengths)
        b = ex(wavs, lengths)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    auto = load_trained_extractor(exp / "config.yaml", ckpt, dtype="auto")
    assert auto.frontend.auto_dtype and lora_state(auto.frontend) is None
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(a, auto(wavs, lengths)).min() > 0.99


def test_lora_run_resumes_from_its_state_file(trained, tmp_path):
    tmp, cfg, _, _ = trained
    shutil.copytree(tmp / "lora", tmp_path / "lora")
    cfg2 = dict(cfg, exp_dir=str(tmp_path / "lora"), num_epochs=2, checkpoint="latest")
    result = train(cfg2)
    assert result.epoch == 2
    sd = read_weights(checkpoint_path(tmp_path / "lora" / "models", 2))
    assert FINGERPRINT_KEY in sd and sum(".lora_" in k for k in sd) == 16


def test_peft_errors_are_rephrased(monkeypatch):
    """Were a name to pass our own check, peft's error becomes a ConfigError naming the layers."""
    monkeypatch.setattr(lora_module, "check_targets", lambda frontend, targets: None)
    with pytest.raises(ConfigError, match=r"peft could not wrap \['nope'\].*'q_proj'"):
        build_extractor(_extractor_cfg(lora={"target_modules": ["nope"]}))


def test_merge_tool_refuses_a_model_without_lora(trained, tmp_path):
    tmp, cfg, _, _ = trained
    plain = tmp_path / "plain"
    plain.mkdir()
    write_config(plain / "config.yaml", {k: v for k, v in cfg.items() if k != "lora_args"})
    save_weights(read_weights(checkpoint_path(tmp / "lora" / "models", 1)),
                 plain / "avg_model.pt")
    assert merge_bin.main(["--model_dir", str(plain)]) == 1
    assert not (tmp_path / "plain_merged").exists()


def test_a_lora_experiment_exports_to_onnx_merged(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    tmp, _, _, _ = trained
    exp = tmp / "lora"
    save_weights(read_weights(checkpoint_path(exp / "models", 1)), exp / "models" / "avg_model.pt")
    out = export_model_dir(exp, tmp_path / "x.onnx")  # verifies onnxruntime against PyTorch
    wavs, lengths = _batch()
    ref = load_trained_extractor(exp / "config.yaml", exp / "models" / "avg_model.pt")
    with torch.no_grad():
        want = ref(wavs, lengths).numpy()
    got = OnnxEmbedder(out, model_dir=exp).embed_waveforms(wavs.numpy(), lengths.numpy())
    assert abs(got - want).max() < 1e-4
