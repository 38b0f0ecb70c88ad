"""Trial and score files, Kaldi ark/scp embeddings, cosine scoring and its bad inputs."""

import logging

import kaldiio
import numpy as np
import pytest

from wespeaker_lap.io.xvectors import EmbeddingTable, load_mean_vec, write_xvectors
from wespeaker_lap.scoring.score import (
    MissingEmbeddingError,
    Trials,
    cosine_score,
    read_scores,
    read_trials,
    score_files,
    write_scores,
)


def _embeddings(n=12, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return {f"spk{i % 3}/utt{i:03d}.wav": rng.normal(size=dim).astype(np.float32) for i in range(n)}


def _write(path, text):
    path.write_text(text)
    return path


def test_read_trials_detects_kaldi_voxceleb_and_unlabeled_formats(tmp_path):
    k = read_trials(_write(tmp_path / "k", "a b target\nc d nontarget\n"))
    v = read_trials(_write(tmp_path / "v", "1 a b\n0 c d\n"))
    u = read_trials(_write(tmp_path / "u", "a b\n\nc d\n"))
    for t in (k, v):
        assert (t.enroll, t.test, t.labels.tolist()) == (["a", "c"], ["b", "d"], [1, 0])
    assert (u.enroll, u.test, u.labels) == (["a", "c"], ["b", "d"], None)
    assert read_trials(tmp_path / "v", fmt="voxceleb").labels.tolist() == [1, 0]


def test_read_trials_rejects_unknown_label_with_file_and_line(tmp_path):
    path = _write(tmp_path / "trials", "a b target\n\nc d nontarget\ne f maybe\n")
    with pytest.raises(ValueError, match=r"trials:4: unknown trial label 'maybe'"):
        read_trials(path)
    vox = _write(tmp_path / "vox", "1 a b\n2 c d\n")
    with pytest.raises(ValueError, match=r"vox:2: unknown trial label '2'"):
        read_trials(vox)
    with pytest.raises(ValueError, match=r"bad:1: unknown trial label"):
        read_trials(_write(tmp_path / "bad", "a b yes\n"))
    with pytest.raises(ValueError, match=r"k:1: unknown trial label"):
        read_trials(_write(tmp_path / "k", "1 a b\n"), fmt="kaldi")


def test_read_trials_rejects_empty_list_and_mixed_field_counts(tmp_path):
    with pytest.raises(ValueError, match="empty trial list"):
        read_trials(_write(tmp_path / "empty", "\n\n"))
    with pytest.raises(ValueError, match=r"mixed:2: expected 3 fields"):
        read_trials(_write(tmp_path / "mixed", "a b target\nc d\n"))


def test_cosine_score_equals_per_trial_mean_subtracted_cosine():
    emb = _embeddings()
    keys = list(emb)
    rng = np.random.default_rng(1)
    mean = rng.normal(size=16).astype(np.float32)
    enroll = [keys[i] for i in rng.integers(0, len(keys), 40)]
    test = [keys[i] for i in rng.integers(0, len(keys), 40)]
    trials = Trials(enroll, test, rng.integers(0, 2, 40))
    kept, scores = cosine_score(emb, trials, mean)
    assert len(kept) == 40
    for e, t, s in zip(enroll, test, scores, strict=True):
        a, b = emb[e] - mean, emb[t] - mean
        assert s == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-6)


def test_kaldi_ark_scp_embeddings_read_back_identically_and_score_the_same(tmp_path):
    emb = _embeddings()
    scp = tmp_path / "xvector.scp"
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'xvector.ark'},{scp}") as w:
        for k, v in emb.items():
            w(k, v)
    table = EmbeddingTable.from_scp(scp)
    assert table.keys == list(emb)
    np.testing.assert_array_equal(table.matrix, np.stack(list(emb.values())))
    loaded = kaldiio.load_scp(str(scp))
    for k, v in emb.items():
        np.testing.assert_array_equal(loaded[k], v)
    # scoring from the scp and from the dict give identical files
    keys = list(emb)
    trials = tmp_path / "trials"
    trials.write_text("".join(f"1 {keys[i]} {keys[-i - 1]}\n" for i in range(6)))
    mean = np.full(16, 0.1, dtype=np.float32)
    np.save(tmp_path / "mean_vec.npy", mean)
    (a,) = score_files(scp, [trials], tmp_path / "from_scp", tmp_path / "mean_vec.npy")
    (b,) = score_files(emb, [trials], tmp_path / "from_dict", mean)
    assert a.name == "trials.score"
    assert a.read_bytes() == b.read_bytes()


def test_score_file_round_trip_keeps_keys_labels_and_scores(tmp_path):
    trials = Trials(["a", "b", "c"], ["d", "e", "f"], np.array([1, 0, 1]))
    scores = np.array([0.5, -0.25, 0.123456])
    write_scores(tmp_path / "x.score", trials, scores)
    assert (tmp_path / "x.score").read_text().splitlines()[1] == "b e -0.250000 nontarget"
    back, back_scores = read_scores(tmp_path / "x.score")
    assert (back.enroll, back.test, back.labels.tolist()) == (trials.enroll, trials.test, [1, 0, 1])
    np.testing.assert_allclose(back_scores, scores, atol=5e-7)
    write_scores(tmp_path / "y.score", back, back_scores)
    assert (tmp_path / "y.score").read_bytes() == (tmp_path / "x.score").read_bytes()
    # unlabeled trials give three-column score files
    write_scores(tmp_path / "u.score", Trials(["a"], ["b"]), np.array([0.1]))
    u, _ = read_scores(tmp_path / "u.score")
    assert u.labels is None
    with pytest.raises(ValueError, match="no target/nontarget labels"):
        read_scores(tmp_path / "u.score", require_labels=True)


def test_missing_embedding_error_names_count_and_first_utterances():
    emb = _embeddings(n=4)
    keys = list(emb)
    trials = Trials([keys[0], "ghost1", keys[1], "ghost2"], [keys[2], keys[3], "ghost3", keys[0]],
                    source="trials.txt")
    with pytest.raises(MissingEmbeddingError) as err:
        cosine_score(emb, trials)
    msg = str(err.value)
    assert "trials.txt: 3 of 4 trials" in msg and "3 utterances missing" in msg
    assert "ghost1, ghost2, ghost3" in msg and "--allow-missing" in msg


def test_allow_missing_skips_trials_and_reports_the_count(caplog):
    emb = _embeddings(n=4)
    keys = list(emb)
    trials = Trials([keys[0], "ghost", keys[1]], [keys[2], keys[3], keys[3]], np.array([1, 0, 0]))
    with caplog.at_level(logging.WARNING):
        kept, scores = cosine_score(emb, trials, allow_missing=True)
    assert kept.enroll == [keys[0], keys[1]] and kept.labels.tolist() == [1, 0]
    assert scores.shape == (2,)
    assert "1 of 3 trials" in caplog.text
    with pytest.raises(MissingEmbeddingError, match="no trial left"):
        cosine_score(emb, Trials(["ghost"], ["ghost2"]), allow_missing=True)


def test_nan_in_embeddings_or_scores_is_an_error(tmp_path):
    emb = _embeddings(n=3)
    bad = dict(emb)
    bad["spk0/utt000.wav"] = emb["spk0/utt000.wav"].copy()
    bad["spk0/utt000.wav"][3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in embeddings: 1 rows, first: spk0/utt000"):
        EmbeddingTable.from_dict(bad)
    path = tmp_path / "x.score"
    path.write_text("a b 0.1 target\nc d nan nontarget\n")
    with pytest.raises(ValueError, match=r"x.score:2: non-finite score"):
        read_scores(path)
    with pytest.raises(ValueError, match="NaN or inf in scores"):
        write_scores(tmp_path / "y.score", Trials(["a"], ["b"]), np.array([np.nan]))


def test_bad_score_lines_and_mean_vector_are_errors_naming_the_file(tmp_path):
    path = tmp_path / "x.score"
    path.write_text("a b 0.1 target\nc d 0.2 bogus\n")
    with pytest.raises(ValueError, match=r"x.score:2: unknown trial label 'bogus'"):
        read_scores(path)
    path.write_text("a b 0.1 target\nc d zero target\n")
    with pytest.raises(ValueError, match=r"x.score:2: bad score 'zero'"):
        read_scores(path)
    path.write_text("")
    with pytest.raises(ValueError, match="empty score file"):
        read_scores(path)
    np.save(tmp_path / "mean.npy", np.zeros(5))
    with pytest.raises(ValueError, match="mean vector has dim 5, embeddings have 16"):
        load_mean_vec(tmp_path / "mean.npy", 16)


def test_duplicate_embedding_keys_are_an_error(tmp_path):
    scp = tmp_path / "a.scp"
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'a.ark'},{scp}") as w:
        w("u1", np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="duplicate embedding key 'u1'"):
        EmbeddingTable.from_scp([scp, scp])


def test_read_trials_accepts_tabs_crlf_blank_lines_and_unicode_spaces(tmp_path):
    path = tmp_path / "t"
    path.write_bytes(b"a\tb target\r\n\r\n  c  d nontarget\r\n")
    t = read_trials(path)
    assert (t.enroll, t.test, t.labels.tolist()) == (["a", "c"], ["b", "d"], [1, 0])
    path.write_text("a\u2003b target\nc d\u00a0nontarget\n", encoding="utf-8")  # slow path
    t = read_trials(path)
    assert (t.enroll, t.test, t.labels.tolist()) == (["a", "c"], ["b", "d"], [1, 0])
    path.write_text("a b target\n\n\nc d nontarget extra\n")
    with pytest.raises(ValueError, match=r"t:4: expected 3 fields \(as on line 1\), got 4"):
        read_trials(path)


def test_scp_over_several_arks_with_mixed_entries_reads_like_kaldiio(tmp_path):
    """The vectorised reader: two arks, keys of many lengths (so vectors start at every
    byte alignment), float64 vectors and a matrix among the float32 ones (read by kaldiio)."""
    rng = np.random.default_rng(7)
    parts = []
    for a in range(2):
        emb = {"k" * (1 + i % 5) + f"{a}_{i}": rng.normal(size=16).astype(np.float32)
               for i in range(23)}
        emb[f"double{a}"] = rng.normal(size=16)  # float64: kaldiio writes a double vector
        emb[f"matrix{a}"] = rng.normal(size=(2, 8)).astype(np.float32)
        with kaldiio.WriteHelper(f"ark,scp:{tmp_path / f'x{a}.ark'},{tmp_path / f'x{a}.scp'}") as w:
            for k, v in emb.items():
                w(k, v)
        parts.append(emb)
    scp = tmp_path / "all.scp"
    scp.write_text((tmp_path / "x0.scp").read_text() + (tmp_path / "x1.scp").read_text())
    table = EmbeddingTable.from_scp(scp)
    expect = {k: v for p in parts for k, v in p.items()}
    assert table.keys == list(expect)
    np.testing.assert_array_equal(
        table.matrix, np.stack([np.asarray(v, np.float32).reshape(-1) for v in expect.values()]))
    assert table.matrix.dtype == np.float32 and table.matrix.flags.c_contiguous
    # vectors of two sizes in one ark are an error naming the scp
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'm.ark'},{tmp_path / 'm.scp'}") as w:
        w("a", np.ones(4, np.float32))
        w("b", np.ones(5, np.float32))
    with pytest.raises(ValueError, match=r"m\.scp: embeddings of different sizes: \[4, 5\]"):
        EmbeddingTable.from_scp(tmp_path / "m.scp")


def test_scp_read_from_a_mapped_ark_owns_its_data_and_names_an_empty_or_cut_ark(tmp_path):
    """The ark is memory-mapped: the table must not keep a view into it (the ark may be
    rewritten later), and an empty or truncated ark is an error naming scp, key and ark."""
    rng = np.random.default_rng(1)
    emb = {f"u{i}": rng.normal(size=8).astype(np.float32) for i in range(5)}
    ark, scp = write_xvectors(tmp_path, emb)
    table = EmbeddingTable.from_scp(scp)
    ark.write_bytes(b"")  # the ark cut while the table lives (a view would now crash)
    np.testing.assert_array_equal(table.matrix, np.stack(list(emb.values())))
    with pytest.raises(ValueError, match=r"xvector\.scp: u0: offset \d+ is past the end of .*"
                                         r"\(0 bytes\)"):
        EmbeddingTable.from_scp(scp)
    ark.write_bytes(b"u0 \0BFV \4\x08\0\0\0" + b"\0" * 12)  # a vector cut short
    scp.write_text(f"u0 {ark}:3\n")
    with pytest.raises(ValueError, match=r"u0: vector of 8 floats .* runs past the end"):
        EmbeddingTable.from_scp(scp)
