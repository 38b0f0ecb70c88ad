"""ONNX export of the whole extractor: onnxruntime equals PyTorch, identity checks, no torch.

Tiny random WavLM, HuBERT, wav2vec 2.0 and w2v-BERT 2.0 extractors (LAP_ASTP, and MHFA) are
exported and run at several lengths and in padded batches; a tiny trained model
directory goes through ``bin/export_onnx`` and ``wespeaker-lap ... --onnx``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from wespeaker_lap.bin import export_onnx  # noqa: E402
from wespeaker_lap.cli import main as cli  # noqa: E402
from wespeaker_lap.export.exporter import export_extractor, verify_onnx  # noqa: E402
from wespeaker_lap.export.identity import PREFIX, fingerprint, model_metadata  # noqa: E402
from wespeaker_lap.export.runtime import OnnxEmbedder  # noqa: E402
from wespeaker_lap.frontend.fingerprint import (  # noqa: E402
    FINGERPRINT_FILE,
    frontend_fingerprint,
    write_fingerprint,
)
from wespeaker_lap.frontend.testing import tiny_ssl_config  # noqa: E402
from wespeaker_lap.io.checkpoints import save_weights  # noqa: E402
from wespeaker_lap.models import build_extractor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000

BACKEND_ARGS = {
    "LAP_ASTP": {"embed_dim": 16, "lap_dim": 32, "heads": 4},
    "MHFA": {"embed_dim": 16, "head_nb": 4, "compression_dim": 8},
}


def tiny_config(family="wavlm", backend="LAP_ASTP", **ssl):
    return {
        "frontend": "ssl",
        "frontend_args": {"config": tiny_ssl_config(family, **ssl)},
        "model": backend,
        "model_args": dict(BACKEND_ARGS[backend]),
    }


def trained(cfg, seed=1):
    """An extractor whose backend weights differ from a fresh init (as training leaves them)."""
    torch.manual_seed(seed)
    ext = build_extractor(cfg).eval()
    for p in ext.backend.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return ext


def padded(lengths, seed=0):
    rng = np.random.default_rng(seed)
    wavs = np.zeros((len(lengths), max(lengths)), dtype=np.float32)
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * rng.standard_normal(n)
    return wavs, np.asarray(lengths, dtype=np.int64)


def torch_embed(ext, wavs, lengths):
    with torch.no_grad():
        return ext(torch.from_numpy(wavs), torch.from_numpy(lengths)).numpy()


# (family, backend, SSL options): Base-style (GroupNorm CNN, raw input) and a Large-style
# HuBERT (LayerNorm CNN, normalised input, stable layer norm).
CASES = [
    ("wavlm", "LAP_ASTP", {}),
    ("hubert", "LAP_ASTP", {"stable_layer_norm": True}),
    ("wav2vec2", "LAP_ASTP", {}),
    ("wav2vec2-bert", "LAP_ASTP", {}),
    ("wavlm", "MHFA", {}),
]


@pytest.mark.parametrize("family,backend,ssl", CASES, ids=[f"{f}-{b}" for f, b, _ in CASES])
def test_onnxruntime_equals_pytorch_at_any_length_and_in_padded_batches(
        tmp_path, family, backend, ssl):
    ext = trained(tiny_config(family, backend, **ssl))
    shortest = ext.frontend.min_samples  # one frame (400 samples; 560 for w2v-BERT's fbank)
    meta = model_metadata(embed_dim=16, sample_rate=RATE, min_samples=shortest,
                          fingerprint="sha256:test", weights="none", model=backend,
                          frontend=family)
    path = export_extractor(ext, tmp_path / "x.onnx", meta, verify=False)
    run = OnnxEmbedder(path)
    # one utterance alone at lengths the trace never saw
    for n in (shortest, 5_000, 27_001):
        wavs, lengths = padded([n], seed=n)
        np.testing.assert_allclose(run.embed_waveforms(wavs, lengths),
                                   torch_embed(ext, wavs, lengths), atol=1e-4, rtol=0)
    # a padded batch: equal to PyTorch, and each row equal to the utterance run alone
    wavs, lengths = padded([20_000, 9_000, shortest + 1, 16_000, 20_000])
    wavs[4] = wavs[0]
    got = run.embed_waveforms(wavs, lengths)
    np.testing.assert_allclose(got, torch_embed(ext, wavs, lengths), atol=1e-4, rtol=0)
    for i, n in enumerate(lengths):
        alone = run.embed_waveforms(wavs[i : i + 1, :n], lengths[i : i + 1])
        np.testing.assert_allclose(got[i : i + 1], alone, atol=1e-4, rtol=0)
    assert np.abs(got[0] - got[1]).max() > 1e-3  # different utterances, different embeddings
    np.testing.assert_allclose(got[0], got[4], atol=1e-5)  # same audio, same embedding


def test_verification_catches_a_graph_that_differs_from_pytorch(tmp_path):
    ext = trained(tiny_config())
    meta = model_metadata(embed_dim=16, sample_rate=RATE, min_samples=400,
                          fingerprint="sha256:test", weights="none")
    path = export_extractor(ext, tmp_path / "x.onnx", meta, verify=False)
    other = trained(tiny_config(), seed=2)
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        verify_onnx(other, path)
    assert verify_onnx(ext, path) < 1e-4


# ---------------------------------------------------------------- a trained model dir
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model_dir, onnx file, audio files): an exp_dir as training leaves it, exported."""
    root = tmp_path_factory.mktemp("export")
    d = root / "exp"
    (d / "models").mkdir(parents=True)
    cfg = tiny_config()
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    ext = trained(cfg)
    ext.add_module("projection", torch.nn.Linear(16, 5))  # the training head is dropped
    save_weights(ext, d / "models" / "avg_model.pt")
    out = d / "extractor.onnx"
    assert export_onnx.main(["--model_dir", str(d), "--out", str(out)]) == 0
    rng = np.random.default_rng(3)
    wavs = []
    for i, (n, rate) in enumerate([(16_000, 16_000), (9_000, 16_000), (30_000, 22_050)]):
        p = root / f"utt{i}.wav"
        sf.write(p, (0.2 * rng.standard_normal(n)).astype(np.float32), rate)
        wavs.append(str(p))
    return d, out, wavs


def test_export_writes_the_model_identity_into_the_metadata(exported):
    d, out, _ = exported
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props[PREFIX + "embed_dim"] == "16"
    assert props[PREFIX + "sample_rate"] == str(RATE)
    assert props[PREFIX + "weights"] == "models/avg_model.pt"
    assert props[PREFIX + "fingerprint"] == fingerprint(d / "config.yaml",
                                                        d / "models/avg_model.pt")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_cli_onnx_equals_the_pytorch_cli_on_files(exported, tmp_path, capsys):
    d, out, wavs = exported
    for flag in (["--model_dir", str(d)], ["--onnx", str(out)],
                 ["--onnx", str(out), "--model_dir", str(d)]):
        name = "t" if flag[0] == "--model_dir" and len(flag) == 2 else f"o{len(flag)}"
        assert cli.main(["embed", *flag, *wavs, "--out", str(tmp_path / f"{name}.npy")]) == 0
    ref = np.load(tmp_path / "t.npy")
    assert ref.shape == (3, 16)
    for name in ("o2", "o4"):
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), ref, atol=1e-4, rtol=0)
    capsys.readouterr()
    assert cli.main(["similarity", "--onnx", str(out), wavs[0], wavs[2]]) == 0
    onnx_score = float(capsys.readouterr().out)
    assert cli.main(["similarity", "--model_dir", str(d), wavs[0], wavs[2]]) == 0
    assert abs(float(capsys.readouterr().out) - onnx_score) < 1e-4
    assert cli.main(["verify", "--onnx", str(out), wavs[0], wavs[0], "--threshold", "0.9"]) == 0
    assert "same speaker" in capsys.readouterr().out


def test_onnx_cli_path_never_imports_torch(exported, tmp_path):
    d, out, wavs = exported
    code = (
        "import sys\n"
        "from wespeaker_lap.cli.main import main\n"
        f"rc = main(['embed', '--onnx', {str(out)!r}, '--model_dir', {str(d)!r}, "
        f"{wavs[0]!r}, {wavs[1]!r}, '--out', {str(tmp_path / 'e.npy')!r}])\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('rc', rc, 'imported', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "rc 0 imported []" in res.stdout, res.stdout + res.stderr
    assert np.load(tmp_path / "e.npy").shape == (2, 16)


def test_an_onnx_file_from_another_model_is_a_clear_error(exported, tmp_path, capsys):
    d, out, wavs = exported
    other = tmp_path / "other"
    (other / "models").mkdir(parents=True)
    (other / "config.yaml").write_text((d / "config.yaml").read_text())
    ext = trained(tiny_config(), seed=7)  # same config, other weights
    save_weights(ext, other / "models" / "avg_model.pt")
    with pytest.raises(ValueError, match="exported from another model"):
        OnnxEmbedder(out, model_dir=other)
    (other / "models" / "avg_model.pt").rename(other / "models" / "model_3.pt")
    with pytest.raises(ValueError, match="exported from another model: .* now loads "
                       "models/model_3.pt, the file was exported from models/avg_model.pt"):
        OnnxEmbedder(out, model_dir=other)
    rc = cli.main(["embed", "--onnx", str(out), "--model_dir", str(other), wavs[0],
                   "--out", str(tmp_path / "e.npy")])
    assert rc == 2 and "exported from another model" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()


def test_an_export_is_refused_once_the_model_dir_would_load_other_weights(tmp_path, capsys):
    # issue 28: export F while D holds only final_model.pt, then average into
    # D/models/avg_model.pt. final_model.pt is unchanged, but D now loads avg_model.pt.
    d = tmp_path / "exp"
    (d / "models").mkdir(parents=True)
    cfg = tiny_config()
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    save_weights(trained(cfg), d / "final_model.pt")
    f = tmp_path / "f.onnx"
    assert export_onnx.main(["--model_dir", str(d), "--out", str(f), "--no_verify"]) == 0
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32),
             RATE)
    assert cli.main(["similarity", "--onnx", str(f), "--model_dir", str(d), str(wav),
                     str(wav)]) == 0
    save_weights(trained(cfg, seed=4), d / "models" / "avg_model.pt")
    capsys.readouterr()
    assert cli.main(["similarity", "--onnx", str(f), "--model_dir", str(d), str(wav),
                     str(wav)]) == 2
    err = capsys.readouterr().err
    assert "exported from another model" in err
    assert "now loads models/avg_model.pt" in err and "exported from final_model.pt" in err


def test_the_torch_free_weights_rule_is_the_one_loading_uses(tmp_path):
    from wespeaker_lap.export.identity import MODEL_CANDIDATES, weights_loaded_from
    from wespeaker_lap.models import inference

    assert MODEL_CANDIDATES == inference.MODEL_CANDIDATES
    d = tmp_path / "exp"
    (d / "models").mkdir(parents=True)
    (d / "config.yaml").write_text("x: 1\n")
    assert weights_loaded_from(d) is None
    for name in ("models/model_2.pt", "models/model_10.pt", "models/state_12.pt",
                 "final_model.pt", "models/final_model.pt", "avg_model.pt",
                 "models/avg_model.pt"):
        (d / name).write_bytes(b"w")
        want = inference.resolve_model_dir(d)[1].relative_to(d).as_posix()
        assert weights_loaded_from(d) == want, name


def test_an_onnx_file_without_our_metadata_is_a_clear_error(exported, tmp_path):
    _, out, _ = exported
    model = onnx.load(str(out))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ValueError, match="was not exported by wespeaker_lap.bin.export_onnx"):
        OnnxEmbedder(bare)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load ONNX file"):
        OnnxEmbedder(junk)


def test_onnx_runtime_rejects_bad_audio_and_options_by_name(exported, tmp_path, capsys):
    _, out, wavs = exported
    short = tmp_path / "short.wav"
    sf.write(short, np.full(300, 0.1, dtype=np.float32), RATE)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, dtype=np.float32), RATE)
    run = OnnxEmbedder(out)
    with pytest.raises(ValueError, match="short.wav is too short"):
        run([wavs[0], str(short)])
    with pytest.raises(ValueError, match="silent.wav is silent"):
        run([str(silent)])
    with pytest.raises(ValueError, match=r"lengths must lie in \[400, 1000\]"):
        run.embed_waveforms(np.zeros((1, 1000), np.float32), np.array([1200]))
    assert cli.main(["embed", "--onnx", str(out), "--dtype", "float16", wavs[0],
                     "--out", str(tmp_path / "e.npy")]) == 2
    assert "--onnx runs float32 on the CPU" in capsys.readouterr().err
    assert cli.main(["embed", wavs[0], "--out", str(tmp_path / "e.npy")]) == 2
    assert "give --model_dir" in capsys.readouterr().err


def test_a_format_1_file_embeds_long_audio_whole_with_a_warning(exported, tmp_path, caplog):
    _, out, _ = exported
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    props[PREFIX + "format_version"] = "1"
    for key in ("pool_graph", "pool_sha256", "hop_samples", "frames_time_axis"):
        del props[PREFIX + key]
    del model.metadata_props[:]
    for k, v in props.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    long = tmp_path / "long.wav"
    sf.write(long, (0.1 * np.random.default_rng(5).standard_normal(21 * RATE)).astype(
        np.float32), RATE)
    with caplog.at_level("WARNING"):
        emb = OnnxEmbedder(old)([str(long)])
    assert emb.shape == (1, 16) and np.isfinite(emb).all()
    assert "longer than 20 s" in caplog.text and "one pass" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        OnnxEmbedder(out)([str(long)])
    assert "one pass" not in caplog.text


# ---------------------------------------------------------------- long audio in windows
WINDOW_BACKENDS = {
    "LAP_ASTP": {"lap_dim": 16, "heads": 4}, "SUPERB_ASTP": {}, "SUPERB_TSTP": {},
    "LastLayer_ASTP": {}, "MHFA": {"head_nb": 4, "compression_dim": 8},
    "CA_MHFA": {"head_nb": 4, "compression_dim": 8, "context": 3},
    "SSL_ECAPA_TDNN_c512": {}, "UniPool": {"channels": 16, "heads": 4},
}


def window_extractor(backend, seed=1, family="wavlm"):
    cfg = {"frontend": "ssl", "frontend_args": {"config": tiny_ssl_config(family)},
           "model": backend, "model_args": {"embed_dim": 8, **WINDOW_BACKENDS[backend]}}
    return trained(cfg, seed)


def windowed_pair(backend, tmp_path, family="wavlm"):
    ext = window_extractor(backend, family=family)
    meta = model_metadata(embed_dim=8, sample_rate=RATE, min_samples=ext.frontend.min_samples,
                          fingerprint="sha256:test", weights="none", model=backend)
    return ext, OnnxEmbedder(export_extractor(ext, tmp_path / "x.onnx", meta, verify=False))


@pytest.mark.parametrize("backend", list(WINDOW_BACKENDS))
def test_onnx_windows_long_audio_as_pytorch_embed_does(backend, tmp_path):
    # 10 s: the whole-utterance graph; 60 s: 20 s windows overlapping by 4 s, pooled once.
    # Padded together in one batch, as PyTorch's embed gets them.
    ext, run = windowed_pair(backend, tmp_path)
    wavs, lengths = padded([60 * RATE, 10 * RATE], seed=4)
    with torch.no_grad():
        ref = ext.embed(torch.from_numpy(wavs), torch.from_numpy(lengths)).numpy()
    got = run.embed_waveforms(wavs, lengths)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    whole = run.embed_whole(wavs[:1], lengths[:1])  # one pass differs from the windows
    assert np.abs(whole - ref[:1]).max() > 1e-6


def test_onnx_windows_w2v_bert_fbank_frames_as_pytorch_embed_does(tmp_path):
    # w2v-BERT's frames come from its stacked fbank, not a CNN: other frame counts per window
    ext, run = windowed_pair("LAP_ASTP", tmp_path, family="wav2vec2-bert")
    wavs, lengths = padded([45 * RATE + 777], seed=9)
    with torch.no_grad():
        ref = ext.embed(torch.from_numpy(wavs), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(run.embed_waveforms(wavs, lengths), ref, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["LAP_ASTP", "UniPool"])
def test_onnx_windows_ten_minutes_as_pytorch_embed_does(backend, tmp_path):
    ext, run = windowed_pair(backend, tmp_path)
    wavs, lengths = padded([600 * RATE + 1234], seed=6)
    with torch.no_grad():
        ref = ext.embed(torch.from_numpy(wavs), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(run.embed_waveforms(wavs, lengths), ref, atol=1e-4, rtol=0)


def test_the_pooling_graph_must_be_the_one_exported_with_the_file(exported, tmp_path):
    d, out, wavs = exported
    pool = out.with_name("extractor.pool.onnx")
    assert pool.is_file()
    alone = tmp_path / "extractor.onnx"
    alone.write_bytes(out.read_bytes())
    with pytest.raises(FileNotFoundError, match="needs its pooling graph .*extractor.pool.onnx"):
        OnnxEmbedder(alone)
    other = onnx.load(str(pool))
    other.graph.initializer[0].raw_data = bytes(len(other.graph.initializer[0].raw_data))
    onnx.save(other, str(tmp_path / "extractor.pool.onnx"))
    with pytest.raises(ValueError, match="is not the pooling graph exported with"):
        OnnxEmbedder(alone)
    with pytest.raises(ValueError, match="is the pooling graph of an export"):
        OnnxEmbedder(pool)


def test_export_of_a_directory_without_a_model_is_a_clear_error(tmp_path, capsys):
    assert export_onnx.main(["--model_dir", str(tmp_path), "--out",
                             str(tmp_path / "x.onnx")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert export_onnx.main(["--model_dir", str(tmp_path), "--opset", "13"]) == 2
    assert "--opset must be >= 17" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_export_refuses_a_model_whose_frozen_ssl_model_changed(tmp_path, capsys):
    d = tmp_path / "exp"
    (d / "models").mkdir(parents=True)
    cfg = tiny_config()
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    save_weights(trained(cfg), d / "models" / "avg_model.pt")
    # training recorded another frozen SSL model than the one the config now builds
    other = {"config": tiny_ssl_config("wavlm"), "init_seed": 5}
    write_fingerprint(d, frontend_fingerprint(other))
    assert export_onnx.main(["--model_dir", str(d), "--out", str(d / "x.onnx")]) == 2
    assert FINGERPRINT_FILE in capsys.readouterr().err
    assert not (d / "x.onnx").exists()


def test_export_takes_rate_and_shortest_input_from_the_frontend_not_a_fallback():
    from wespeaker_lap.export.exporter import audio_contract

    ext = build_extractor(tiny_config())
    assert audio_contract(ext) == (ext.frontend.sample_rate, ext.frontend.min_samples)
    ext.frontend.sample_rate = 8000  # what the frontend reports is what the export records
    assert audio_contract(ext)[0] == 8000
    del ext.frontend.sample_rate
    with pytest.raises(AttributeError, match="sample_rate"):
        audio_contract(ext)  # no silent 16000


# ---------------------------------------------------------------- variants and providers
@pytest.fixture(scope="module")
def variants(exported, tmp_path_factory):
    """(model_dir, fp32 file, int8 file, fp16 file): exported with an EER measured."""
    d, _, wavs = exported
    root = tmp_path_factory.mktemp("variants")
    rng = np.random.default_rng(8)
    scp, names = [], []
    for i in range(6):
        p = root / f"u{i}.wav"
        base = rng.standard_normal(12_000) if i % 2 == 0 else rng.standard_normal(12_000) * 0.5
        sf.write(p, (0.1 * base).astype(np.float32), RATE)
        scp.append(f"u{i} {p}")
        names.append(f"u{i}")
    (root / "wav.scp").write_text("\n".join(scp) + "\n")
    trials = [f"u0 u{j} {'target' if j % 2 == 0 else 'nontarget'}" for j in range(1, 6)]
    trials += [f"u1 u{j} {'target' if j % 2 == 1 else 'nontarget'}" for j in range(2, 6)]
    (root / "trials").write_text("\n".join(trials) + "\n")
    out = root / "x.onnx"
    assert export_onnx.main(["--model_dir", str(d), "--out", str(out), "--no_verify",
                             "--quantize", "int8", "--fp16", "--eer_trials",
                             str(root / "trials"), "--eer_wav_scp", str(root / "wav.scp"),
                             "--eer_name", "tiny"]) == 0
    return d, out, root / "x.int8.onnx", root / "x.fp16.onnx"


def test_int8_and_fp16_variants_carry_their_precision_and_measured_eer_change(variants):
    d, out, int8, fp16 = variants
    base = OnnxEmbedder(out, model_dir=d)
    assert base.identity["eer_trials"] == "tiny" and "precision" not in base.identity
    wavs, lengths = padded([30_000, 9_000, 21 * RATE])
    ref = base.embed_waveforms(wavs, lengths)
    for path, precision in ((int8, "int8"), (fp16, "fp16")):
        run = OnnxEmbedder(path, model_dir=d)  # same model: the identity check passes
        ident = run.identity
        assert ident["precision"] == precision and ident["eer_trials"] == "tiny"
        assert float(ident["eer_change"]) == pytest.approx(
            float(ident["eer"]) - float(ident["eer_fp32"]), abs=1e-3)
        assert float(ident["eer_fp32"]) == pytest.approx(float(base.identity["eer"]))
        assert run.windowed  # shares the float32 pooling graph
        got = run.embed_waveforms(wavs, lengths)
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.99, (precision, cos)
    q = onnx.load(str(int8))
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in q.graph.node)


def test_load_model_picks_the_onnx_variant_by_precision(variants):
    from wespeaker_lap.api import load_model

    d, out, int8, _ = variants
    m = load_model(out, runtime="onnx", precision="int8")
    assert m.backend.path == int8 and m.backend.identity["precision"] == "int8"
    m = load_model(d, runtime="onnx", onnx=out, precision="fp16", threads=1)
    assert m.backend.identity["precision"] == "fp16"
    with pytest.raises(ValueError, match="precision must be one of"):
        load_model(out, runtime="onnx", precision="int4")
    with pytest.raises(ValueError, match="options of runtime='onnx'"):
        load_model(d, precision="int8")


def test_onnx_runtime_options_and_bad_files_are_clear_errors(variants, tmp_path):
    _, out, int8, _ = variants
    with pytest.raises(ValueError, match=r"has no CUDAExecutionProvider; available here: .*"
                       r"CPUExecutionProvider \(cpu\)"):
        OnnxEmbedder(out, providers="cuda,cpu")
    with pytest.raises(ValueError, match="has no NoSuchProvider"):
        OnnxEmbedder(out, providers=["NoSuchProvider"])
    with pytest.raises(ValueError, match="threads must be >= 1"):
        OnnxEmbedder(out, threads=0)
    assert OnnxEmbedder(out, providers="cpu", threads=1).providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="is a directory; expected an exported .onnx"):
        OnnxEmbedder(tmp_path)
    # a file cut short: the error names it
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(out.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot load ONNX file .*cut.onnx"):
        OnnxEmbedder(cut)
    # a quantized model needing an operator this runtime lacks
    q = onnx.load(str(int8))
    node = next(n for n in q.graph.node if n.op_type == "DynamicQuantizeLinear")
    node.op_type, node.domain = "DynamicQuantizeLinearV9", "com.microsoft"
    lacking = tmp_path / "x.int8.onnx"
    onnx.save(q, str(lacking))
    (tmp_path / "x.pool.onnx").write_bytes(out.with_name("x.pool.onnx").read_bytes())
    with pytest.raises(ValueError, match="x.int8.onnx: this onnxruntime .* lacks an operator"):
        OnnxEmbedder(lacking)


def test_export_variant_options_are_checked_before_any_work(exported, tmp_path, capsys):
    d, _, _ = exported
    out = tmp_path / "x.onnx"
    assert export_onnx.main(["--model_dir", str(d), "--out", str(out),
                             "--eer_trials", str(tmp_path / "nope")]) == 2
    assert "--eer_trials and --eer_wav_scp go together" in capsys.readouterr().err
    assert export_onnx.main(["--model_dir", str(d), "--out", str(out), "--eer_trials",
                             str(tmp_path / "nope"), "--eer_wav_scp", str(tmp_path)]) == 2
    assert "--eer_trials: no such file" in capsys.readouterr().err
    assert export_onnx.main(["--model_dir", str(d), "--out", str(out),
                             "--quantize", "int8_static"]) == 2
    assert "int8_static and --calib_wav_scp go together" in capsys.readouterr().err
    assert not out.exists()


def test_export_measures_several_trial_lists_and_both_int8_variants_in_one_run(variants,
                                                                               tmp_path):
    d, out, _, _ = variants
    root = out.parent
    lines = (root / "trials").read_text().splitlines()
    (tmp_path / "trials").write_text("\n".join(lines[4:]) + "\n")  # a second, smaller list
    x = tmp_path / "x.onnx"
    assert export_onnx.main(["--model_dir", str(d), "--out", str(x), "--no_verify",
                             "--quantize", "int8", "--quantize", "int8_static",
                             "--calib_wav_scp", str(root / "wav.scp"), "--calib_utts", "3",
                             "--calib_seconds", "0.5",
                             "--eer_trials", str(root / "trials"), str(tmp_path / "trials"),
                             "--eer_wav_scp", str(root / "wav.scp"), str(root / "wav.scp"),
                             "--eer_name", "full", "part"]) == 0
    base = OnnxEmbedder(x, model_dir=d).identity
    assert base["eer_trials"] == "full,part"
    fp32 = [float(v) for v in base["eer"].split(",")]
    # the first list is the fixture's: the same EER as its single-list export
    assert fp32[0] == pytest.approx(float(OnnxEmbedder(out).identity["eer"]), abs=1e-4)
    for precision in ("int8", "int8_static"):
        ident = OnnxEmbedder(tmp_path / f"x.{precision}.onnx", model_dir=d).identity
        assert ident["precision"] == precision and ident["eer_trials"] == "full,part"
        assert ident["eer_batch_size"] == "8"  # the default batch the EER was measured at
        eer, ref, change = ([float(v) for v in ident[k].split(",")]
                            for k in ("eer", "eer_fp32", "eer_change"))
        assert len(eer) == len(change) == 2 and ref == pytest.approx(fp32, abs=1e-4)
        assert change == pytest.approx([e - r for e, r in zip(eer, ref, strict=True)], abs=1e-3)


def test_export_trial_list_options_must_pair_up(exported, tmp_path, capsys):
    d, _, _ = exported
    out = tmp_path / "x.onnx"
    t = tmp_path / "trials"
    t.write_text("a b target\n")
    assert export_onnx.main(["--model_dir", str(d), "--out", str(out), "--eer_trials",
                             str(t), str(t), "--eer_wav_scp", str(t)]) == 2
    assert "got 2 list(s) and 1 wav.scp" in capsys.readouterr().err
    assert export_onnx.main(["--model_dir", str(d), "--out", str(out), "--eer_trials",
                             str(t), str(t), "--eer_wav_scp", str(t), str(t)]) == 2
    assert "must be distinct" in capsys.readouterr().err  # both named after tmp_path
    assert export_onnx.main(["--model_dir", str(d), "--out", str(out), "--eer_trials",
                             str(t), "--eer_wav_scp", str(t), "--eer_name", "a", "b"]) == 2
    assert "--eer_name: 2 name(s) for 1 trial list(s)" in capsys.readouterr().err
    assert export_onnx.main(["--model_dir", str(d), "--out", str(out),
                             "--quantize", "int8", "--quantize", "int8"]) == 2
    assert "--quantize given twice" in capsys.readouterr().err
    assert not out.exists()


def test_static_int8_is_calibrated_on_given_audio_and_stays_close(variants, tmp_path):
    from wespeaker_lap.export.variants import write_variant

    d, out, _, _ = variants
    local = tmp_path / "x.onnx"
    local.write_bytes(out.read_bytes())
    (tmp_path / "x.pool.onnx").write_bytes(out.with_name("x.pool.onnx").read_bytes())
    with pytest.raises(ValueError, match="needs calibration audio"):
        write_variant(local, "int8_static")
    rng = np.random.default_rng(2)
    calib = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8_000, 16_000, 12_345)]
    path = write_variant(local, "int8_static", calibration=calib)
    assert path.name == "x.int8_static.onnx"
    run = OnnxEmbedder(path, model_dir=d)
    assert run.identity["precision"] == "int8_static"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
    wavs, lengths = padded([30_000, 9_000])
    ref = OnnxEmbedder(local).embed_waveforms(wavs, lengths)
    got = run.embed_waveforms(wavs, lengths)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.98, cos
