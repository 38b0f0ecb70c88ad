"""The model package (bin/package_model): what it holds, that it scores as the recipe does,
its manifest, its SSL fingerprint, ONNX inside it, and loading it by hub id offline."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from data_helpers import make_tone_data_dir
from test_extract import tiny_config

from wespeaker_lap.api import PackageError, load_model
from wespeaker_lap.api.package import FINGERPRINT_FILE as PKG_FINGERPRINT_FILE
from wespeaker_lap.api.package import write_manifest
from wespeaker_lap.api.packaging import PackageOptions, build_package
from wespeaker_lap.bin import extract, package_model
from wespeaker_lap.frontend import SSLFrontend
from wespeaker_lap.frontend.fingerprint import (
    FINGERPRINT_FILE,
    frontend_fingerprint,
    write_fingerprint,
)
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.io.checkpoints import save_weights
from wespeaker_lap.models import build_extractor
from wespeaker_lap.scoring.metrics import compute_eer
from wespeaker_lap.scoring.score import cosine_score, read_trials
from wespeaker_lap.scoring.score_norm import build_cohort, normalize_scores

ROOT = Path(__file__).resolve().parents[1]


def _exp_on_saved_ssl(root: Path) -> Path:
    """An exp_dir whose frozen SSL model is a saved directory (to bundle), with frontend.json."""
    ssl = root / "ssl"
    SSLFrontend(config=tiny_ssl_config("wavlm"), init_seed=0).save_pretrained(ssl)
    exp = root / "exp"
    (exp / "models").mkdir(parents=True)
    cfg = tiny_config()
    cfg["frontend_args"] = {"model_name_or_path": str(ssl)}
    torch.manual_seed(1)
    ext = build_extractor(cfg)
    for p in ext.backend.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    ext.add_module("projection", torch.nn.Linear(16, 3))
    save_weights(ext, exp / "models" / "avg_model.pt")
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))
    write_fingerprint(exp, frontend_fingerprint(cfg["frontend_args"]))
    return exp


def _trials(data: Path) -> Path:
    keys = sorted(line.split()[0] for line in (data / "wav.scp").read_text().splitlines())
    spk = {k: k.split("-")[0] for k in keys}
    lines = [f"{a} {b} {'target' if spk[a] == spk[b] else 'nontarget'}"
             for i, a in enumerate(keys) for b in keys[i + 1:]]
    path = data / "trials"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    exp = _exp_on_saved_ssl(root)
    data = make_tone_data_dir(root / "data", speakers=4, utts=3)
    emb = exp / "embeddings" / "val"
    assert extract.main(["--model_dir", str(exp), "--data", str(data), "--embed_dir",
                         str(emb), "--no_progress"]) == 0
    trials = _trials(data)
    out = root / "package"
    assert package_model.main([
        "--exp_dir", str(exp), "--out", str(out), "--bundle_ssl",
        "--mean_vec", str(emb / "mean_vec.npy"),
        "--cohort_embeddings", str(emb / "xvector.scp"), "--cohort_utt2spk",
        str(data / "utt2spk"), "--top_n", "3", "--trials", str(trials), "--trial_embeddings",
        str(emb / "xvector.scp"), "--trial_utt2dur", str(data / "utt2dur"), "--calibrate",
        "--onnx", "--onnx_precision", "int8", "--name", "tiny test model"]) == 0
    return {"exp": exp, "data": data, "emb": emb, "trials": trials, "out": out, "root": root}


def test_the_package_holds_what_the_issue_lists(packaged):
    out = packaged["out"]
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for f in ("package.json", "manifest.json", "config.yaml", "frontend.json",
              "model.safetensors", "mean_vec.npy", "cohort.npy", "calibration.json",
              "model.onnx", "README.md", "ssl/config.json"):
        assert f in names, f
    assert not [n for n in names if n.endswith((".pt", ".pkl", ".bin"))], "no pickle inside"
    def no_constant(c):
        raise AssertionError(f"package.json holds {c}: not plain JSON")

    meta = json.loads((out / "package.json").read_text(), parse_constant=no_constant)
    assert set(meta["thresholds"]["values"]) == {"eer", "mindcf0.01", "mindcf0.05"}
    # a package is shared: no file in it is private to its writer
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.rglob("*") if p.is_file())
    assert meta["thresholds"]["trials"]["size"] == 66 and meta["ssl"]["source"] == "bundled"
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n") and "load_model(" in card
    assert yaml.safe_load((out / "config.yaml").read_text())["frontend_args"][
        "model_name_or_path"] == "ssl"
    assert PKG_FINGERPRINT_FILE == FINGERPRINT_FILE
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".package")]


def test_model_score_on_the_trials_gives_the_recipes_asnorm_scores_and_eer(packaged):
    model = load_model(packaged["out"])
    emb = packaged["emb"]
    trials = read_trials(packaged["trials"])
    kept, raw = cosine_score(emb / "xvector.scp", trials, np.load(emb / "mean_vec.npy"))
    cohort = build_cohort(emb / "xvector.scp", np.load(emb / "mean_vec.npy"),
                          packaged["data"] / "utt2spk")
    _, recipe = normalize_scores(kept, raw, emb / "xvector.scp", cohort,
                                 np.load(emb / "mean_vec.npy"), top_n=3)
    wavs = {k: str(packaged["data"] / "wav" / f"{k}.wav") for k in set(trials.enroll)
            | set(trials.test)}
    keys = sorted(wavs)
    table = dict(zip(keys, model.embed([wavs[k] for k in keys]), strict=True))
    ours = model.score(np.stack([table[k] for k in trials.enroll]),
                       np.stack([table[k] for k in trials.test]))
    np.testing.assert_allclose(ours, recipe, atol=1e-4, rtol=0)
    assert compute_eer(ours, trials.labels)[0] == compute_eer(recipe, trials.labels)[0]


def test_verify_reports_score_llr_and_the_measured_thresholds(packaged):
    model = load_model(packaged["out"])
    a, b = (str(packaged["data"] / "wav" / f"{k}.wav") for k in ("spk0-utt0", "spk0-utt1"))
    r = model.verify(a, b)
    assert r.llr is not None and r.norm == "asnorm" and r.threshold_source.startswith("eer")
    values = json.loads((packaged["out"] / "package.json").read_text())["thresholds"]["values"]
    r2 = model.verify(a, b, operating_point="mindcf0.05")
    assert r2.score == pytest.approx(r.score) and r2.threshold == values["mindcf0.05"]
    assert r.threshold == values["eer"]
    r3 = model.verify(a, b, p_target=0.05)
    assert r3.decision == (r3.llr >= np.log(0.95 / 0.05))


def test_onnx_in_the_package_runs_without_torch_and_equals_pytorch(packaged, tmp_path):
    out, wav = packaged["out"], str(packaged["data"] / "wav" / "spk1-utt0.wav")
    ref = load_model(out).embed(wav)
    np.testing.assert_allclose(load_model(out, runtime="onnx").embed(wav), ref, atol=1e-4)
    code = ("import sys, wespeaker_lap\n"
            f"m = wespeaker_lap.load_model({str(out)!r}, runtime='onnx')\n"
            f"print(m.verify({wav!r}, {wav!r}).decision)\n"
            "print(sorted(x for x in ('torch', 'transformers') if x in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["True", "[]"], res.stdout + res.stderr


def test_the_package_carries_the_int8_onnx_variant_and_load_model_picks_it(packaged):
    out, wav = packaged["out"], str(packaged["data"] / "wav" / "spk1-utt0.wav")
    meta = json.loads((out / "package.json").read_text())
    assert meta["onnx_variants"] == {"int8": {"file": "model.int8.onnx"}}
    assert "model.int8.onnx" in json.loads((out / "manifest.json").read_text())["files"]
    m = load_model(out, runtime="onnx", precision="int8")
    assert m.backend.identity["precision"] == "int8"
    ref = load_model(out, runtime="onnx").embed(wav).ravel()
    got = m.embed(wav).ravel()
    assert float(got @ ref / np.linalg.norm(got) / np.linalg.norm(ref)) > 0.99
    with pytest.raises(ValueError, match="has no fp16 ONNX variant .*int8"):
        load_model(out, runtime="onnx", precision="fp16")


def _copy(packaged, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(packaged["out"], dst)
    return dst


def test_a_missing_or_altered_file_is_named_with_both_hashes(packaged, tmp_path):
    pkg = _copy(packaged, tmp_path)
    manifest = json.loads((pkg / "manifest.json").read_text())["files"]
    with open(pkg / "cohort.npy", "ab") as f:
        f.write(b"\0")
    (pkg / "ssl" / "config.json").unlink()
    with pytest.raises(PackageError) as e:
        load_model(pkg)
    msg = str(e.value)
    assert f"cohort.npy: altered (expected sha256 {manifest['cohort.npy']}, actual " in msg
    assert f"ssl/config.json: missing (expected sha256 {manifest['ssl/config.json']})" in msg


def test_a_package_whose_ssl_model_has_another_fingerprint_is_refused(packaged, tmp_path):
    pkg = _copy(packaged, tmp_path)
    SSLFrontend(config=tiny_ssl_config("wavlm"), init_seed=5).save_pretrained(pkg / "ssl")
    write_manifest(pkg)  # a consistent package, but around another SSL model
    with pytest.raises(ValueError, match="differs from the one"):
        load_model(pkg)


def test_an_operating_point_the_package_lacks_lists_the_ones_it_has(packaged, tmp_path):
    pkg = _copy(packaged, tmp_path)
    meta = json.loads((pkg / "package.json").read_text())
    del meta["thresholds"]["values"]["mindcf0.01"]
    (pkg / "package.json").write_text(json.dumps(meta))
    write_manifest(pkg)
    a = str(packaged["data"] / "wav" / "spk0-utt0.wav")
    with pytest.raises(ValueError, match=r"no mindcf0.01 threshold; it has \['eer', "
                                         r"'mindcf0.05'\]"):
        load_model(pkg).verify(a, a, operating_point="mindcf0.01")


def _hf_cache_layout(pkg: Path, cache: Path, repo: str, commit: str) -> None:
    """Lay ``pkg`` out as huggingface_hub's cache does: blobs, refs/main, snapshots/<commit>."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    for f in sorted(p for p in pkg.rglob("*") if p.is_file()):
        rel = f.relative_to(pkg)
        blob = repo_dir / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def test_load_by_hub_id_offline_from_the_hugging_face_cache(packaged, tmp_path):
    cache = tmp_path / "hub"
    _hf_cache_layout(packaged["out"], cache, "someorg/tiny-lap", "a" * 40)
    wav = str(packaged["data"] / "wav" / "spk1-utt0.wav")
    code = ("import wespeaker_lap\n"
            "m = wespeaker_lap.load_model('someorg/tiny-lap')\n"
            f"print(m.info['source'], m.embed({wav!r}).shape)\n"
            "try:\n"
            "    wespeaker_lap.load_model('someorg/absent')\n"
            "except FileNotFoundError as e:\n"
            "    print('ERR', e)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(cache),
           "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=180)
    assert res.returncode == 0, res.stderr
    first, err = res.stdout.strip().split("\n")[:2]
    assert first == "hub:someorg/tiny-lap@main (1, 16)"
    assert "'someorg/absent' at revision 'main' is not in the Hugging Face cache" in err
    assert "offline mode is on" in err and "huggingface-cli download someorg/absent" in err


def test_package_model_refuses_a_local_ssl_model_it_may_not_point_to(packaged, tmp_path,
                                                                     capsys):
    rc = package_model.main(["--exp_dir", str(packaged["exp"]), "--out",
                             str(tmp_path / "p")])
    assert rc == 1 and "pass --bundle_ssl" in capsys.readouterr().err
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.*"))


@pytest.mark.parametrize("ssl", ["bundled", "hub"])
def test_a_package_holds_no_absolute_path_of_the_machine_that_built_it(tmp_path, monkeypatch,
                                                                        ssl):
    # training ran in <tmp>/recipe with absolute paths; a noise list lay outside the recipe
    recipe = tmp_path / "recipe"
    exp = _exp_on_saved_ssl(recipe)
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    cfg.update(exp_dir=str(exp), train_data=str(recipe / "corpus" / "train" / "raw.list"),
               train_label=str(recipe / "corpus" / "train" / "utt2spk"),
               noise_data=str(tmp_path / "shared" / "musan" / "noise.list"),
               valid_data=str(recipe / "corpus" / "valid"))
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))
    if ssl == "bundled":
        opts = PackageOptions(bundle_ssl=True)
    else:  # the hub snapshot is a directory of this machine's cache
        monkeypatch.setattr("wespeaker_lap.api.packaging.download_package",
                            lambda *a, **k: recipe / "ssl")
        opts = PackageOptions(ssl_hub_id="someorg/tiny-ssl", ssl_revision="a" * 40)
    out = build_package(exp, tmp_path / "package", opts)
    texts = {p.relative_to(out).as_posix(): p.read_text(encoding="utf-8")
             for p in out.rglob("*") if p.suffix in (".json", ".yaml", ".md")}
    assert {"README.md", "config.yaml", "package.json", "frontend.json"} <= set(texts)
    for where in {str(tmp_path), str(tmp_path.resolve())}:
        leaks = [name for name, text in texts.items() if where in text]
        assert not leaks, f"{where} is written in {leaks}"
    written = yaml.safe_load(texts["config.yaml"])
    assert written["train_data"] == "./corpus/train/raw.list"  # relative to the recipe
    assert written["exp_dir"] == "./exp" and written["valid_data"] == "./corpus/valid"
    assert written["noise_data"] == "<training machine>/.../musan/noise.list"
    assert "training data: `./corpus/train/raw.list`" in texts["README.md"]
    meta = json.loads(texts["package.json"])
    if ssl == "bundled":
        assert meta["ssl"]["from"] == "./ssl"
        wav = make_tone_data_dir(tmp_path / "data", speakers=1, utts=1) / "wav" / "spk0-utt0.wav"
        assert load_model(out).embed(str(wav)).shape == (1, 16)  # what loading needs is there
    else:
        assert json.loads(texts["frontend.json"])["model_name_or_path"] == "someorg/tiny-ssl"


def test_cli_verify_similarity_enroll_identify_on_a_package(packaged, tmp_path, capsys):
    from wespeaker_lap.cli import main as cli

    pkg, wav = str(packaged["out"]), packaged["data"] / "wav"
    a, b, c = (str(wav / f"{k}.wav") for k in ("spk0-utt0", "spk0-utt1", "spk2-utt0"))
    assert cli.main(["verify", "--model", pkg, a, b]) == 0
    out = capsys.readouterr().out
    assert "(asnorm) llr " in out and "[eer threshold measured on" in out
    assert cli.main(["verify", "--model", pkg, a, b, "--p_target", "0.01"]) == 0
    assert "Bayes decision at p_target 0.01" in capsys.readouterr().out
    assert cli.main(["verify", "--model", pkg, a, b, "--operating_point", "mindcf0.05",
                     "--threshold", "0.3"]) == 2
    assert "give one of" in capsys.readouterr().err
    assert cli.main(["similarity", "--model", pkg, a, b, "--norm", "none"]) == 0
    raw = float(capsys.readouterr().out)
    assert -1.0 <= raw <= 1.0
    ark = tmp_path / "spk.ark"
    assert cli.main(["enroll", "--model", pkg, "--speaker", "zero", a, b, "--speaker", "two",
                     c, "--out", str(ark)]) == 0
    assert ark.is_file() and ark.with_suffix(".scp").is_file()
    capsys.readouterr()
    assert cli.main(["identify", "--model", pkg, "--speakers", str(ark),
                     str(wav / "spk0-utt2.wav"), "--top_k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1 zero ") and lines[-1].startswith("decision: ")


def test_cli_operating_point_missing_from_the_package_lists_those_it_has(packaged, tmp_path,
                                                                         capsys):
    from wespeaker_lap.cli import main as cli

    pkg = _copy(packaged, tmp_path)
    meta = json.loads((pkg / "package.json").read_text())
    meta["thresholds"]["values"] = {"eer": meta["thresholds"]["values"]["eer"]}
    (pkg / "package.json").write_text(json.dumps(meta))
    write_manifest(pkg)
    a = str(packaged["data"] / "wav" / "spk0-utt0.wav")
    assert cli.main(["verify", "--model", str(pkg), a, a, "--operating_point",
                     "mindcf0.01"]) == 2
    assert "no mindcf0.01 threshold; it has ['eer']" in capsys.readouterr().err


def _package_args(packaged, out: Path, *extra: str) -> list[str]:
    emb = packaged["emb"]
    return ["--exp_dir", str(packaged["exp"]), "--out", str(out), "--bundle_ssl",
            "--mean_vec", str(emb / "mean_vec.npy"), "--cohort_embeddings",
            str(emb / "xvector.scp"), "--cohort_utt2spk", str(packaged["data"] / "utt2spk"),
            "--top_n", "3", "--trials", str(packaged["trials"]), "--trial_embeddings",
            str(emb / "xvector.scp"), *extra]


def test_a_qmf_model_fitted_elsewhere_is_the_packages_calibration(packaged, tmp_path, capsys):
    qmf = json.loads((packaged["out"] / "calibration.json").read_text())
    qmf["bias"] += 1.0  # another model: the same LLRs shifted by one
    qmf["info"]["fit_on"] = "/somewhere/scores/cal/qmf_cal.kaldi.asnorm3.score"
    (tmp_path / "qmf.json").write_text(json.dumps(qmf))
    out = tmp_path / "p"
    assert package_model.main(_package_args(packaged, out, "--calibration",
                                            str(tmp_path / "qmf.json"))) == 0
    meta = json.loads((out / "package.json").read_text())
    assert meta["calibration"]["fit_on"] == "qmf_cal.kaldi.asnorm3.score"  # no machine paths
    assert "fitted on `qmf_cal.kaldi.asnorm3.score`" in (out / "README.md").read_text()
    a, b = (str(packaged["data"] / "wav" / f"{k}.wav") for k in ("spk0-utt0", "spk1-utt1"))
    ref = load_model(packaged["out"]).verify(a, b)
    r = load_model(out).verify(a, b)
    assert r.llr == pytest.approx(ref.llr + 1.0, abs=1e-6)
    qmf["top_n"] = 5
    (tmp_path / "qmf5.json").write_text(json.dumps(qmf))
    assert package_model.main(_package_args(packaged, tmp_path / "p5", "--calibration",
                                            str(tmp_path / "qmf5.json"))) == 1
    assert "fitted with cohort top_n 5, the package's is --top_n 3" in capsys.readouterr().err
    assert package_model.main(_package_args(packaged, tmp_path / "p6", "--calibrate",
                                            "--calibration", str(tmp_path / "qmf.json"))) == 1
    assert "not both" in capsys.readouterr().err


def test_the_card_shows_where_the_thresholds_land_on_each_test_set(packaged, tmp_path, capsys):
    tar = np.array([0.9, 0.5, 0.1, -0.2])
    non = np.array([0.6, 0.2, -0.3, -0.5, -0.6, 0.0])
    scores = tmp_path / "trials.kaldi.asnorm3.score"
    scores.write_text("".join(f"t{i} u{i} {s} target\n" for i, s in enumerate(tar))
                      + "".join(f"n{i} v{i} {s} nontarget\n" for i, s in enumerate(non)))
    results = tmp_path / "results_ci.md"
    results.write_text("| test set | EER (%) [95% CI] |\n| --- | --- |\n| t | 25.0 [1, 50] |\n")
    out = tmp_path / "p"
    assert package_model.main(_package_args(packaged, out, "--test_scores", "held_out",
                                            str(scores), "--results", str(results))) == 0
    meta = json.loads((out / "package.json").read_text())
    (t,) = meta["test_sets"]
    assert (t["name"], t["scores"], t["size"]) == ("held_out", scores.name, 10)
    labels = np.r_[np.ones(4), np.zeros(6)]
    own = compute_eer(np.r_[tar, non], labels)[1]
    for op, thr in meta["thresholds"]["values"].items():
        at = t["at_package_thresholds"][op]
        assert at["threshold"] == thr
        assert at["p_miss"] == pytest.approx(np.mean(tar < thr))
        assert at["p_fa"] == pytest.approx(np.mean(non >= thr))
    assert t["at_package_thresholds"]["eer"]["own_threshold"] == pytest.approx(own)
    card = (out / "README.md").read_text()
    assert "| t | 25.0 [1, 50] |" in card and "## The thresholds on the test sets" in card
    assert f"| held_out (`{scores.name}`) | 10 |" in card
    # a test list that shares utterances with the threshold list is refused
    shared = tmp_path / "shared.score"
    shared.write_text("spk0-utt0 x1 0.5 target\ny1 y2 0.1 nontarget\n")
    assert package_model.main(_package_args(packaged, tmp_path / "p2", "--test_scores",
                                            "leaky", str(shared))) == 1
    err = capsys.readouterr().err
    assert "1 utterances are also in the threshold list" in err and "spk0-utt0" in err


def test_an_infinite_threshold_is_written_as_plain_json_and_read_back():
    """A minDCF threshold that rejects every trial is +inf, which plain JSON cannot hold."""
    from wespeaker_lap.api.packaging import _json_safe

    meta = {"values": {"eer": 0.3, "mindcf0.01": float("inf")}, "x": [float("-inf")]}
    text = json.dumps(_json_safe(meta), allow_nan=False)
    back = json.loads(text)
    assert back["values"]["mindcf0.01"] == "inf" and back["x"] == ["-inf"]
    assert float(back["values"]["mindcf0.01"]) == float("inf") and back["values"]["eer"] == 0.3


def test_cli_runs_the_packages_int8_variant_with_chosen_providers_and_threads(packaged,
                                                                               capsys):
    from wespeaker_lap.cli import main as cli

    pkg, wav = str(packaged["out"]), packaged["data"] / "wav"
    a, b = (str(wav / f"{k}.wav") for k in ("spk0-utt0", "spk1-utt0"))
    base = ["similarity", "--model", pkg, a, b, "--norm", "none", "--runtime", "onnx"]
    assert cli.main(base) == 0
    fp32 = float(capsys.readouterr().out)
    assert cli.main([*base, "--precision", "int8", "--providers", "cpu", "--threads", "1"]) == 0
    int8 = float(capsys.readouterr().out)
    assert int8 != fp32 and abs(int8 - fp32) < 0.1  # another model, close to the first
    assert cli.main([*base, "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert cli.main([*base, "--providers", "nosuch"]) == 2
    assert "CPUExecutionProvider" in capsys.readouterr().err  # the ones it has are listed
    assert cli.main(["similarity", "--model", pkg, a, b, "--precision", "int8"]) == 2
    assert "option of the ONNX runtime" in capsys.readouterr().err
