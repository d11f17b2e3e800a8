"""Every documented command composes: `python train.py|evaluate.py|scripts/sweep_qf.py ...`, `make train|evaluate|
sweep-qf ...`, `sbatch scripts/slurm/train.sbatch ...` and `jpegrestore ...` in the README, docs/, the configs'
comments and the scripts' headers.

Nothing is run: Hydra commands are composed and resolved (a typo, a missing required key or a stale group fails),
CLI commands go through the argument parser. Placeholders are written `<...>`; optional parts `[...]` are checked
with their contents; a literal `...` (which fails when pasted) is an error.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import CONF, REPO

PLACEHOLDER = "PLACEHOLDER"
HYDRA_SCRIPTS = {"train.py": "train", "evaluate.py": "evaluate", "scripts/sweep_qf.py": "sweep_qf",
                 "jpegrestore.tasks.dct_stats": "dct_stats"}
MAKE_TARGETS = {"train": "train", "evaluate": "evaluate", "sweep-qf": "sweep_qf"}
_START = re.compile(
    r"(?:(?<=\s)|^)(?:srun\s+)?(?:python3?\s+(?:train\.py|evaluate\.py|scripts/sweep_qf\.py|-m\s+jpegrestore\.tasks\.dct_stats)"
    r"|sbatch\s+(?:--\S+\s+)*scripts/slurm/train\.sbatch|make\s+(?:train|evaluate|sweep-qf)\b|jpegrestore\s+(?!import\b)[a-z])"
)


@dataclass(frozen=True)
class Command:
    where: str
    text: str
    inline: bool = False  # a mention in prose: CLI flags are checked, its required arguments may be left out

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def _doc_files() -> list[Path]:
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    files += sorted(CONF.rglob("*.yaml")) + sorted((REPO / "scripts").rglob("*"))
    return [f for f in files if f.is_file() and f.suffix not in {".png", ".jpg", ".pyc"}]


def _snippets(path: Path) -> list[tuple[str, bool]]:
    """Pieces of text that may hold commands, each with whether it is inline code in prose: code blocks and
    inline code (markdown), comments (anything else)."""
    text = path.read_text()
    if path.suffix == ".md":
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
        inline = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose)]
        return [(b, False) for b in blocks] + [(s, True) for s in inline]
    comments = [re.sub(r"^\s*#+ ?", "", line) for line in text.splitlines() if line.lstrip().startswith("#")]
    if path.suffix == ".py":  # module docstrings hold usage lines too
        comments += re.findall(r'"""(.*?)"""', text, flags=re.S)[:1]
    return [("\n".join(comments), False)]


def _commands(snippet: str, where: str, inline: bool) -> list[Command]:
    joined = re.sub(r"\\\n\s*", " ", snippet)
    found = []
    for line in joined.splitlines():
        for match in _START.finditer(line):
            rest = line[match.start():]
            rest = re.split(r"\s#\s|\s#$|&&|;|\|(?!\|)", rest)[0]
            found.append(Command(where, rest.strip().rstrip(".,)`"), inline))
    return found


def documented_commands() -> list[Command]:
    out = []
    for path in _doc_files():
        for snippet, inline in _snippets(path):
            out += _commands(snippet, str(path.relative_to(REPO)), inline)
    return sorted(set(out), key=str)


def _expand_optional(text: str) -> str:
    """Usage brackets ``[a b]`` (after a space) become their contents; Hydra lists ``key=[1,2]`` stay."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "[" and (i == 0 or text[i - 1] == " "):
            depth, j = 0, i
            while j < len(text):
                depth += {"[": 1, "]": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            out.append(_expand_optional(text[i + 1:j]))
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _tokens(command: Command) -> list[str]:
    text = re.sub(r"<[^<>]*>", PLACEHOLDER, command.text)
    text = re.sub(r"\$\{?\w+\}?", "1", text)
    text = _expand_optional(text)
    tokens = shlex.split(text)
    assert not any("..." in t for t in tokens), f"{command}: a literal '...' fails when pasted; write <...>"
    return tokens[1:] if tokens[0] == "srun" else tokens


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """A multirun sweep ``key=a,b`` composes as its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(text)
    return out


def _compose(config_name: str, overrides: list[str], tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import jpegrestore.utils  # noqa: F401  (registers the config resolvers)

    # A placeholder alone, or as the choice of a config group (experiment=<name>), stands for any valid value.
    overrides = [o for o in overrides if o not in (PLACEHOLDER, "-m", "--multirun")
                 and not (o.endswith(f"={PLACEHOLDER}") and (CONF / o.split("=")[0]).is_dir())]
    overrides = _first_of_sweeps(overrides) + [f"paths.output_dir={tmp_path}", f"paths.log_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def _check_make(tokens: list[str], tmp_path: Path) -> None:
    target, assignments = tokens[1], dict(t.split("=", 1) for t in tokens[2:])
    unknown = set(assignments) - {"ARGS", "CKPT", "DATA", "METHODS"}
    assert not unknown, f"make {target} takes ARGS, CKPT, DATA, METHODS; got {sorted(unknown)}"
    overrides = shlex.split(assignments.get("ARGS", ""))
    if assignments.get("CKPT"):
        overrides.append(f"ckpt={assignments['CKPT']}")
    if assignments.get("METHODS"):
        overrides.append(f"methods={assignments['METHODS']}")
    if assignments.get("DATA"):
        overrides.append(f"data.source={assignments['DATA']}")
    _compose(MAKE_TARGETS[target], overrides, tmp_path)


def _cli_parser(lenient: bool):
    """The CLI's parser; ``lenient`` drops the required arguments, for a command mentioned by its flags alone."""
    import argparse

    from jpegrestore.cli import _parser

    parser = _parser()
    if lenient:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for sub in commands.choices.values():
            for action in sub._actions:
                action.required = False
                if action.nargs == "+":
                    action.nargs = "*"
    return parser


def check_command(command: Command, tmp_path: Path) -> None:
    """Compose (Hydra) or parse (CLI) one documented command; raises with the command named on failure."""
    tokens = _tokens(command)
    try:
        if tokens[0] == "sbatch":  # its arguments go to train.py
            _compose("train", tokens[tokens.index("scripts/slurm/train.sbatch") + 1:], tmp_path)
        elif tokens[0] == "make":
            _check_make(tokens, tmp_path)
        elif tokens[0] == "jpegrestore":
            _cli_parser(lenient=command.inline).parse_args(tokens[1:])
        else:
            script = tokens[2] if tokens[1] == "-m" else tokens[1]
            _compose(HYDRA_SCRIPTS[script], tokens[tokens.index(script) + 1:], tmp_path)
    except SystemExit as exc:  # argparse
        raise AssertionError(f"{command}: the argument parser refused it") from exc
    except Exception as exc:
        raise AssertionError(f"{command}: {type(exc).__name__}: {exc}") from exc


COMMANDS = documented_commands()


def test_the_docs_hold_commands():
    kinds = {c.text.split()[0 if not c.text.startswith("srun") else 1] for c in COMMANDS}
    assert {"python", "jpegrestore", "make"} <= kinds, kinds
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where}:{c.text[:60]}")
def test_documented_command_composes(command: Command, tmp_path: Path):
    check_command(command, tmp_path)


@pytest.mark.parametrize("text", [
    "python train.py experimnt=qgac_stage1",                      # a typo in a group
    "python train.py experiment=codiff_stage2",                    # a required key missing
    "python train.py ... trainer.devices=4",                       # a literal ellipsis
    "python evaluate.py ckpt=logs/.../last.ckpt",                  # an ellipsis inside a path
    "jpegrestore restore photo.jpg --ckpt x.ckpt",                 # -o missing
    "make sweep-qf CKPT=x.ckpt DATASET=/data",                     # an unknown make variable
    "sbatch --nodes=2 scripts/slurm/train.sbatch experiment=codiff_stage2",   # sbatch passes them to train.py
])
def test_a_stale_command_fails(text: str, tmp_path: Path):
    with pytest.raises(AssertionError):
        check_command(Command("test", text), tmp_path)


def test_placeholders_and_usage_brackets_are_understood(tmp_path: Path):
    for text in (
        "python evaluate.py ckpt=<run>/checkpoints/last.ckpt qf=[5,10] [method.samples=8 tile=256]",
        "jpegrestore restore photo.jpg -o out/ --ckpt <posterior_gan ckpt> [--samples 4 --std-map]",
        "python train.py <overrides> ckpt_path=last",
        "python train.py experiment=<name> data=shards data.train_source.data_files=<glob>",
        "python -m jpegrestore.tasks.dct_stats data=folder out=stats.json",
        "python train.py -m experiment=qgac_stage1 seed=1,2",
    ):
        check_command(Command("test", text), tmp_path)
    check_command(Command("test", "jpegrestore restore --samples 4 --std-map", inline=True), tmp_path)
    with pytest.raises(AssertionError):  # a mention still names real flags
        check_command(Command("test", "jpegrestore restore --draws 4", inline=True), tmp_path)
