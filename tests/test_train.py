"""`minitx train` end to end (a few steps of a tiny model), and the model checkpoint helpers it saves with."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitx import AdamW, Config, Transformer
from minitx.io.checkpoint import CheckpointError, load, load_model, save, save_model
from minitx.cli import main
from minitx.cli.train import lr_at

TINY = ["--preset", "tiny-gpt2", "--batch", "2", "--seq", "16", "--eval-every", "2", "--eval-batches", "1",
        "--log-every", "1"]


def _train(path, *extra) -> int:
    return main(["train", "--steps", "3", *TINY, "--out", str(path), *extra])


def test_train_writes_a_checkpoint_that_loads(tmp_path, capsys):
    path = tmp_path / "sub" / "m.ckpt"                    # the folder is created
    assert _train(path) == 0
    out = capsys.readouterr().out
    assert "train loss" in out and "val loss" in out and "tok/s" in out and "saved" in out
    model, opt, meta = load_model(path)
    assert model.cfg.vocab_size == 256 and model.cfg.n_layers == Config.preset("tiny-gpt2").n_layers
    assert opt is not None and opt.t == 3 and meta["step"] == 3
    assert meta["format"] == "minitx-model" and meta["tokenizer"] == "bytes"
    assert math.isfinite(meta["train_loss"]) and math.isfinite(meta["val_loss"])
    assert 0 < meta["val_loss"] < 7
    x = np.arange(16, dtype=np.int64).reshape(1, 16)
    assert np.all(np.isfinite(model.forward(x)))


def test_train_is_reproducible(tmp_path):
    assert _train(tmp_path / "a.ckpt", "--seed", "3") == 0
    assert _train(tmp_path / "b.ckpt", "--seed", "3") == 0
    a, b = load(tmp_path / "a.ckpt")[0], load(tmp_path / "b.ckpt")[0]
    assert np.array_equal(a["params"], b["params"])


def test_train_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "m.ckpt"
    path.write_bytes(b"something the user saved")
    assert _train(path) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert path.read_bytes() == b"something the user saved"
    assert _train(path, "--overwrite") == 0
    assert load_model(path)[2]["step"] == 3


@pytest.mark.parametrize("flags, named", [
    (["--steps", "0"], "--steps"),
    (["--batch", "-1"], "--batch"),
    (["--seq", "0"], "--seq"),
    (["--seq", "33"], "--seq"),                  # beyond tiny-gpt2's n_ctx = 32
    (["--eval-every", "0"], "--eval-every"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr=-1e-3"], "--lr"),
    (["--seed", "-1"], "--seed"),
    (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--preset", "no-such-model"], "--preset"),
])
def test_bad_values_exit_2_naming_the_flag(tmp_path, capsys, flags, named):
    path = tmp_path / "m.ckpt"
    assert main(["train", *TINY, "--steps", "2", "--out", str(path), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1
    assert not path.exists()


@pytest.mark.parametrize("flags", [["--steps", "ten"], ["--dtype", "float16"], ["--batch", "1.5"], ["--bogus"]])
def test_unparseable_flags_exit_2(tmp_path, flags):
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(tmp_path / "m.ckpt"), *flags])
    assert e.value.code == 2


def test_out_is_a_directory(tmp_path):
    assert main(["train", *TINY, "--steps", "1", "--out", str(tmp_path)]) == 2


def test_lr_schedule():
    peak = 1e-3
    lrs = [lr_at(s, 200, peak) for s in range(200)]
    assert lrs[0] == pytest.approx(peak / 10)           # 5% warm-up: 10 steps
    assert max(lrs) == pytest.approx(peak)
    assert lrs[-1] == pytest.approx(0.1 * peak, rel=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(0, 1, peak) == peak


# ---- save_model / load_model ---------------------------------------------------------------------------------

def _trained(cfg_name="tiny-llama", dtype="float64", steps=2):
    cfg = Config.preset(cfg_name)
    model = Transformer(cfg, seed=1, dtype=dtype)
    opt = AdamW(model, lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    x = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(2, 9))
    for _ in range(steps):
        _, g = model.loss_and_grads(x[:, :-1], x[:, 1:])
        opt.step(g)
    return model, opt, x


@pytest.mark.parametrize("cfg_name, dtype", [("tiny-llama", "float64"), ("tiny-gpt2", "float32")])
def test_model_round_trip_is_exact_and_training_continues_identically(tmp_path, cfg_name, dtype):
    model, opt, x = _trained(cfg_name, dtype)
    path = tmp_path / "m.ckpt"
    save_model(path, model, opt, meta={"step": 2, "seed": 1, "tokenizer": "custom"})
    m2, o2, meta = load_model(path)
    assert m2.cfg == model.cfg and m2.dtype == model.dtype
    assert np.array_equal(m2.flat, model.flat)
    assert np.array_equal(o2.m, opt.m) and np.array_equal(o2.v, opt.v) and o2.t == opt.t == 2
    assert (o2.lr, o2.betas, o2.eps, o2.weight_decay) == (opt.lr, opt.betas, opt.eps, opt.weight_decay)
    assert meta["step"] == 2 and meta["seed"] == 1 and meta["tokenizer"] == "custom" and meta["dtype"] == dtype
    for m, o in ((model, opt), (m2, o2)):
        _, g = m.loss_and_grads(x[:, :-1], x[:, 1:])
        o.step(g)
    assert np.array_equal(m2.flat, model.flat)


def test_model_without_optimizer(tmp_path):
    model, _, _ = _trained()
    save_model(tmp_path / "m.ckpt", model)
    m2, opt, meta = load_model(tmp_path / "m.ckpt")
    assert opt is None and "adam" not in meta and np.array_equal(m2.flat, model.flat)
    assert set(load(tmp_path / "m.ckpt")[0]) == {"params"}


def test_save_model_refusals(tmp_path):
    model, opt, _ = _trained()
    path = tmp_path / "m.ckpt"
    save_model(path, model)
    with pytest.raises(FileExistsError):
        save_model(path, model)
    save_model(path, model, opt, overwrite=True)
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path / "x.ckpt", model, meta={"config": {}})
    other, other_opt, _ = _trained()
    with pytest.raises(ValueError, match="optimizer"):
        save_model(tmp_path / "y.ckpt", model, other_opt)
    with pytest.raises(TypeError):
        save_model(tmp_path / "z.ckpt", object())


def _rewrite(path, tensors=None, **meta_changes):
    t, meta = load(path)
    if tensors is not None:
        t = tensors(t)
    meta.update(meta_changes)
    save(path, t, meta, overwrite=True)


@pytest.mark.parametrize("damage", [
    lambda p: _rewrite(p, format="something-else"),
    lambda p: _rewrite(p, dtype="float16"),
    lambda p: _rewrite(p, config={"vocab_size": 0}),
    lambda p: _rewrite(p, config={"bogus_field": 1}),
    lambda p: _rewrite(p, config="tiny"),
    lambda p: _rewrite(p, tensors=lambda t: {**t, "params": t["params"][:-1]}),
    lambda p: _rewrite(p, tensors=lambda t: {**t, "params": t["params"].astype(np.float32)}),
    lambda p: _rewrite(p, tensors=lambda t: {**t, "params": np.where(np.arange(t["params"].size) == 5, np.nan,
                                                                    t["params"])}),
    lambda p: _rewrite(p, tensors=lambda t: {**t, "adam_v": -np.abs(t["adam_v"]) - 1}),
    lambda p: _rewrite(p, tensors=lambda t: {**t, "adam_m": np.full_like(t["adam_m"], np.inf)}),
    lambda p: _rewrite(p, tensors=lambda t: {k: v for k, v in t.items() if k != "adam_v"}),
    lambda p: _rewrite(p, tensors=lambda t: {**t, "extra": np.zeros(3)}),
    lambda p: _rewrite(p, adam={"lr": -1.0, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0, "t": 2}),
    lambda p: _rewrite(p, adam={"lr": 1e-3, "betas": [0.9], "eps": 1e-8, "weight_decay": 0.0, "t": 2}),
    lambda p: _rewrite(p, adam={"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0, "t": -1}),
    lambda p: p.write_bytes(p.read_bytes()[:-100]),
    lambda p: p.write_bytes(b""),
    lambda p: _rewrite(p, config={**load(p)[1]["config"], "rope_theta": 10**400}),   # OverflowError inside
    lambda p: _rewrite(p, adam={"lr": 10**400, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0, "t": 2}),
    lambda p: _rewrite(p, config={**load(p)[1]["config"], "name": ["not", "a", "name"]}),
    lambda p: _rewrite(p, dtype=["float64"]),
])
def test_bad_model_files_raise_checkpoint_error(tmp_path, damage):
    model, opt, _ = _trained()
    path = tmp_path / "m.ckpt"
    save_model(path, model, opt)
    damage(path)
    with pytest.raises(CheckpointError):
        load_model(path)


def test_plain_checkpoint_is_not_a_model(tmp_path):
    save(tmp_path / "p.ckpt", {"params": np.zeros(3)}, {"hello": 1})
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        load_model(tmp_path / "p.ckpt")
    assert not os.path.exists(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.ckpt")


# ---- refusing what cannot fit, before anything is allocated --------------------------------------------------

def test_train_refuses_a_model_too_big_for_this_machine(tmp_path, capsys):
    path = tmp_path / "m.ckpt"
    assert main(["train", "--preset", "llama-2-7b", "--out", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "llama-2-7b" in err and " GB" in err and "MemoryError" not in err
    assert not path.exists()


def test_train_memory_check_uses_the_training_formula():
    import argparse
    from minitx import formulas
    from minitx.cli import train
    args = argparse.Namespace(preset="tiny-gpt2", batch=2, seq=16, dtype="float32")
    cfg = train._config("tiny-gpt2", 16)
    need = formulas.training_memory(cfg, 2, 16, "float32")["total"]
    train._check_memory(cfg, args, available=2 * need)               # exactly half the machine: allowed
    with pytest.raises(ValueError, match=r"tiny-gpt2.*needs about 0\.0 GB"):
        train._check_memory(cfg, args, available=2 * need - 1)
    assert train.physical_memory()[0] > 0


# ---- minitx generate: defaults that fit, one-line errors -------------------------------------------------------

def _tiny_checkpoint(tmp_path) -> str:
    cfg = Config(name="bytes", vocab_size=256, n_ctx=32, d_model=16, n_layers=1, n_heads=2)
    path = str(tmp_path / "g.ckpt")
    save_model(path, Transformer(cfg, seed=0), meta={"tokenizer": "bytes"})
    return path


def test_generate_default_fills_a_small_context(tmp_path, capsys):
    path = _tiny_checkpoint(tmp_path)
    assert main(["generate", "--checkpoint", path, "--prompt", "abcd", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("abcd") and out.endswith("\n")
    model = load_model(path)[0]
    from minitx import generate
    ids = generate(model, [list(b"abcd")], 28)[0]                    # min(200, n_ctx − prompt) = 28
    assert out == "abcd" + bytes(ids).decode("utf-8", errors="replace") + "\n"


def test_generate_errors_are_one_line(tmp_path, capsys):
    path = _tiny_checkpoint(tmp_path)
    assert main(["generate", "--checkpoint", path, "--prompt", "abcd", "--max-new-tokens", "29"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the prompt has 4 tokens" in err and "n_ctx=32" in err
    assert "prompt 0" not in err and "at most 28" in err
    assert main(["generate", "--checkpoint", path, "--prompt", "x" * 32]) == 2
    assert "no room" in capsys.readouterr().err
    missing = str(tmp_path / "nope.ckpt")
    assert main(["generate", "--checkpoint", missing, "--prompt", "a"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and missing in err and "not found" in err and "Errno" not in err
    assert main(["generate", "--checkpoint", str(tmp_path), "--prompt", "a"]) == 2
    assert "directory" in capsys.readouterr().err


# ---- an unwritable --out is found before training, and a failed final save does not lose the run ---------------

def test_out_under_a_file_is_refused_before_the_first_step(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    path = tmp_path / "notes.txt" / "m.ckpt"
    assert _train(path) == 2
    captured = capsys.readouterr()
    assert "step" not in captured.out                           # nothing was trained
    assert captured.err.count("\n") == 1 and "--out" in captured.err and str(path) in captured.err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_out_directory_is_refused_before_the_first_step(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert _train(folder / "m.ckpt") == 2
    finally:
        folder.chmod(0o755)
    captured = capsys.readouterr()
    assert "step" not in captured.out and "--out" in captured.err and "not writable" in captured.err
    assert os.listdir(folder) == []


def test_a_folder_that_refuses_new_files_is_found_before_the_first_step(tmp_path, capsys, monkeypatch):
    """The same as the read-only folder above, for any user (root writes anywhere): creating the probe fails."""
    from minitx.cli import train

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(train.tempfile, "mkstemp", refuse)
    assert _train(tmp_path / "m.ckpt") == 2
    captured = capsys.readouterr()
    assert "step" not in captured.out and captured.err.count("\n") == 1
    assert "--out" in captured.err and "not writable" in captured.err and "Permission denied" in captured.err
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_out_that_is_not_a_regular_file_is_refused(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert _train(fifo, "--overwrite") == 2
    assert "not a regular file" in capsys.readouterr().err
    assert not os.path.isfile(fifo)


def test_writability_probe_leaves_nothing_behind(tmp_path):
    assert _train(tmp_path / "m.ckpt") == 0
    assert os.listdir(tmp_path) == ["m.ckpt"]


def test_a_failed_final_save_keeps_the_run_in_a_fallback_file(tmp_path, capsys, monkeypatch):
    import tempfile
    from minitx.io import checkpoint
    fallback_dir = tmp_path / "fallback"
    fallback_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(fallback_dir))
    path = tmp_path / "out" / "m.ckpt"
    real = checkpoint.save_model

    def failing(target, *args, **kwargs):
        if os.fspath(target) == str(path):                      # e.g. the disk filled up during training
            raise OSError(28, "No space left on device", str(target))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_model", failing)
    code = _train(path)
    captured = capsys.readouterr()
    assert code != 0 and not path.exists()
    saved = os.listdir(fallback_dir)
    assert len(saved) == 1 and saved[0].endswith(".ckpt") and "m" in saved[0]
    fallback = fallback_dir / saved[0]
    assert str(fallback) in captured.err and str(path) in captured.err and "No space left" in captured.err
    model, opt, meta = load_model(fallback)
    assert meta["step"] == 3 and opt.t == 3


# ---- load_model bounds what a config may allocate; a config's every float is checked -------------------------

def test_rope_model_claiming_a_huge_context_is_refused_before_it_is_built(tmp_path, monkeypatch):
    import minitx.core.model as model_module
    model = Transformer(Config.preset("tiny-llama").replace(head_dim=2), seed=0)    # tables: n_ctx x 1 each
    path = tmp_path / "m.ckpt"
    save_model(path, model)
    _rewrite(path, config={**model.cfg.to_dict(), "n_ctx": 10**9})    # same parameters: RoPE has no table

    def must_not_run(*args, **kwargs):
        raise AssertionError("the RoPE tables were allocated")

    monkeypatch.setattr(model_module, "rope_tables", must_not_run)
    with pytest.raises(CheckpointError, match="n_ctx") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_rope_model_with_a_long_but_plausible_context_loads(tmp_path):
    model, _, _ = _trained("tiny-llama")
    path = tmp_path / "m.ckpt"
    long = Transformer(model.cfg.replace(n_ctx=65536), seed=0, dtype="float64")   # tables of 6 MB, 100 KB of weights
    save_model(path, long)
    assert load_model(path)[0].cfg.n_ctx == 65536


def test_config_with_absurd_layer_count_is_refused_without_listing_its_parameters(tmp_path, monkeypatch):
    import minitx.core.params as params_module
    model, _, _ = _trained("tiny-llama")
    path = tmp_path / "m.ckpt"
    save_model(path, model)
    _rewrite(path, config={**model.cfg.to_dict(), "n_layers": 10**12})
    real = params_module.param_table

    def bounded(cfg):
        assert cfg.n_layers < 1000, "param_table would list 10^13 parameters"
        return real(cfg)

    monkeypatch.setattr(params_module, "param_table", bounded)
    with pytest.raises(CheckpointError, match="params") as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("field, value", [("rope_theta", float("nan")), ("rope_theta", float("inf")),
                                          ("rope_theta", 0.5), ("rope_theta", "1e4"), ("rope_theta", True),
                                          ("rope_theta", 10**400),                 # an int no float can hold
                                          ("norm_eps", float("nan")), ("norm_eps", True)])
def test_every_float_field_is_validated_even_when_unused(field, value):
    with pytest.raises(ValueError, match=field):
        Config.preset("tiny-gpt2").replace(**{field: value})     # learned positions: rope_theta is unused


def test_save_model_of_a_config_with_a_nan_field_fails_naming_it(tmp_path):
    with pytest.raises(ValueError, match="rope_theta"):
        save_model(tmp_path / "m.ckpt", Transformer(Config(name="g", rope_theta=float("nan"))))
    assert not (tmp_path / "m.ckpt").exists()


_json_junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12),
                       st.sampled_from([2**63, 10**30, 10**400, 10**9, -1]),      # 10**9: n_ctx past the RoPE cap
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=4),
                       st.lists(st.integers(0, 3), max_size=2), st.just({}))


@st.composite
def _model_meta(draw, base):
    meta = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["config", "config", "config", "adam", "top"]))
        if where in ("config", "adam") and isinstance(meta[where], dict) and meta[where]:
            meta[where][draw(st.sampled_from(sorted(meta[where])))] = draw(_json_junk)
        elif where == "top":
            meta[draw(st.sampled_from(["format", "dtype", "config", "adam"]))] = draw(_json_junk)
    return meta


_BASE_MODEL = _trained("tiny-llama", steps=1)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_model_meta_ends_in_checkpoint_error(tmp_path, data):
    """save (a valid checksum) a real model's tensors under a meta with some fields replaced by junk: load_model
    either returns a working model or raises CheckpointError naming the file; nothing else escapes."""
    model, opt, _ = _BASE_MODEL
    path = tmp_path / "fuzz.ckpt"
    if not path.exists():
        save_model(path, model, opt)
    tensors, base = load(path)
    meta = data.draw(_model_meta(base))
    if data.draw(st.booleans()):
        tensors = {**tensors, "params": tensors["params"][:data.draw(st.integers(0, tensors["params"].size))]}
    bad = tmp_path / "bad.ckpt"
    save(bad, tensors, meta, overwrite=True)
    try:
        m2, _, _ = load_model(bad)
    except CheckpointError as error:
        assert str(bad) in str(error)
    else:
        assert np.array_equal(m2.flat, tensors["params"])


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="POSIX devices")
def test_generate_from_dev_zero_is_a_one_line_error():
    """Run in a child with bounded memory and time, so a regression (reading /dev/zero forever) fails the test
    rather than the machine."""
    import subprocess
    import sys
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)); "
              "from minitx.cli import main; "
              "sys.exit(main(['generate', '--checkpoint', '/dev/zero', '--prompt', 'a']))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "/dev/zero" in result.stderr and "not a regular file" in result.stderr
