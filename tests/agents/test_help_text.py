"""`agentrm ... --help` renders every subcommand's text as written (argparse %-formats only argument help)."""

from __future__ import annotations

import argparse

from agentrm_jax.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_no_subcommand_help_shows_a_doubled_percent_sign():
    parser = build_parser()
    helps = {"agentrm": parser.format_help()}
    helps.update({name: sub.format_help() for name, sub in _subparsers(parser).items()})
    assert len(helps) > 5
    assert {name for name, text in helps.items() if "%%" in text} == set()


def test_report_help_shows_the_confidence_level():
    text = " ".join(_subparsers(build_parser())["report"].format_help().split())  # undo the line wrapping
    assert "95% Wilson interval" in text and "a 95% t interval" in text
