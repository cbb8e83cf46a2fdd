"""The `agentrm` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agentrm_jax.cli import main


def test_help_explains_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "generate" in out and "bench" in out


def test_help_imports_no_heavy_library():
    """`agentrm --help` and every subcommand's registration stay cheap: nothing numeric is imported
    until a command runs (measured: under 0.3 s for `agentrm --help` on 2 cores)."""
    heavy = ("jax", "flax", "numpy", "grain", "optax", "orbax", "scipy", "matplotlib", "transformers", "tokenizers")
    script = ("import sys\nfrom agentrm_jax.cli import build_parser\nbuild_parser().format_help()\n"
              f"print([m for m in {heavy!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_generate_help_names_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    for flag in ("--prompt", "--model", "--max-new-tokens", "--temperature", "--stop", "--raw"):
        assert flag in out


def test_missing_model_path_is_a_clear_error(tmp_path, capsys):
    code = main(["generate", "--prompt", "hi", "--model", str(tmp_path / "nope")])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_an_os_error_on_a_user_path_is_one_line(tmp_path, capsys):
    code = main(["samples", "--trees", str(tmp_path), "--out", str(tmp_path / "out.jsonl")])  # a directory
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(tmp_path) in err and "Traceback" not in err


def test_bad_max_new_tokens_is_a_clear_error(capsys):
    code = main(["generate", "--prompt", "hi", "--max-new-tokens", "0"])
    assert code == 2
    assert "max_new_tokens" in capsys.readouterr().err


def test_impossible_max_new_tokens_is_refused_before_loading(monkeypatch, capsys):
    import agentrm_jax.models as models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --max-new-tokens was checked")

    monkeypatch.setattr(models, "from_pretrained", no_load)
    assert main(["generate", "--prompt", "hi", "--max-new-tokens", "100000"]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens=100000 does not fit the model's context window of 8192 positions" in err
    assert "shorten the prompt" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.real_model
def test_generate_on_the_bundled_model_answers():
    result = subprocess.run([sys.executable, "-m", "agentrm_jax.cli", "generate", "--prompt",
                             "What is the capital of France? Answer in one word.", "--max-new-tokens", "12"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "tokens/s" in result.stderr


def test_bench_models_runs_and_reports_figures(tmp_path, capsys):
    code = main(["bench", "models", "--skip-torch", "--skip-decode", "--skip-matmul", "--random-init",
                 "--batch", "1", "--length", "16", "--repeats", "1", "--json", str(tmp_path / "bench.json")])
    assert code == 0
    out = capsys.readouterr()
    assert "tok/s" in out.err + out.out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["forward"]["ours"]["tokens_per_s"] > 0


def test_bench_train_is_reachable_from_the_cli(capsys):
    # the script's own parser answers through `agentrm bench train` (running it loads the real model twice)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--skip-memory" in out and "--pause" in out


def test_bench_episodes_refuses_bad_sizes_and_a_missing_server_before_loading(tmp_path, capsys):
    # each is one argparse line naming the flag, before the model is loaded (which takes seconds)
    for argv, flag in ((["--beam", "0x2"], "--beam"), (["--beam", "4"], "--beam"), (["--bon", "0"], "--bon"),
                       (["--llama-server", str(tmp_path / "no-such-llama-server")], "--llama-server")):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", "episodes", *argv])
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert flag in err.splitlines()[-1], err
    with pytest.raises(SystemExit):
        main(["bench", "episodes", "--help"])
    out = capsys.readouterr().out
    assert "beam" in out and "bon" in out and "--llama-server" in out
