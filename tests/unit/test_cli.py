"""`sealgate serve` takes exactly one SAE key source; a half-given HSM is an error, not a fallback."""

import argparse

import pytest

from ext_authz.cli.common import signer_from_args
from ext_authz.errors import ConfigError


def args(**kw):
    return argparse.Namespace(**{"key": None, "hsm_module": None, "hsm_token": None, "hsm_key": None, **kw})


@pytest.mark.parametrize("kw,message", [
    ({}, "an SAE signing key is needed"),
    ({"key": "k.seed", "hsm_module": "/usr/lib/softhsm/libsofthsm2.so"}, "not both"),
    ({"hsm_module": "/usr/lib/softhsm/libsofthsm2.so", "hsm_token": "t"}, "an SAE signing key is needed"),
], ids=["no_key_source", "key_file_and_hsm", "hsm_without_key_label"])
def test_ambiguous_or_missing_key_sources_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        signer_from_args(args(**kw))


def test_a_missing_key_file_is_not_created_by_serve(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        signer_from_args(args(key=str(tmp_path / "absent.seed")))
    assert not (tmp_path / "absent.seed").exists()


def walk(parser, path=()):
    """Every (command path, parser) pair of the CLI, leaves included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))


def test_every_flag_has_help_and_every_command_an_example():
    from ext_authz.cli import build_parser

    missing_help, missing_example = [], []
    for path, parser in walk(build_parser()):
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help:
                missing_help.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if path and leaf and "example:" not in (parser.epilog or ""):
            missing_example.append(" ".join(path))
    assert not missing_help, missing_help
    assert not missing_example, missing_example


def test_defaults_are_shown_in_help(capsys):
    from ext_authz.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # help text wraps
    assert "(default: unix:/run/sealgate/authorizer.sock)" in out and "example:" in out and "SEALGATE_HSM_PIN" in out


def verify_argv(token):
    return ["verify", token, "--jwks", "j.json", "--manifest", "m.json", "--anchor-db", "a.sqlite3"]


def test_verify_given_a_path_says_to_use_at_file(tmp_path, monkeypatch, capsys):
    from ext_authz.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sae.jwt").write_text("a.b.c\n")
    assert main(verify_argv("sae.jwt")) == 2
    err = capsys.readouterr().err
    assert "pass @sae.jwt" in err and "INVALID" not in err


@pytest.mark.parametrize("token,message", [("@absent.jwt", "cannot read the SAE"), ("@empty.jwt", "is empty")],
                         ids=["unreadable_file", "empty_file"])
def test_verify_io_errors_exit_2_with_a_message(tmp_path, monkeypatch, capsys, token, message):
    from ext_authz.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.jwt").write_text("\n")
    assert main(verify_argv(token)) == 2
    assert message in capsys.readouterr().err


def test_verify_reads_the_token_from_a_file_and_stdin(tmp_path, monkeypatch):
    import io

    from ext_authz.cli.common import read_token

    (tmp_path / "sae.jwt").write_text(" a.b.c \n")
    assert read_token(f"@{tmp_path / 'sae.jwt'}") == "a.b.c"
    monkeypatch.setattr("sys.stdin", io.StringIO("x.y.z\n"))
    assert read_token("-") == "x.y.z"
    assert read_token("p.q.r") == "p.q.r"


def test_keys_generate_writes_a_0600_seed_and_never_overwrites(tmp_path, capsys):
    import json
    import stat

    from ext_authz.cli import main
    from ext_authz.signing.file_key import Ed25519Signer

    out = tmp_path / "sae.seed"
    assert main(["keys", "generate", "--out", str(out)]) == 0
    jwk = json.loads(capsys.readouterr().out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and len(out.read_bytes()) == 32
    assert jwk == Ed25519Signer.from_file(out).public_jwk() and "d" not in jwk
    before = out.read_bytes()
    assert main(["keys", "generate", "--out", str(out)]) == 2
    assert "never overwritten" in capsys.readouterr().err and out.read_bytes() == before
