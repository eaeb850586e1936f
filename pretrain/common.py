"""What every part of ringnce shares: the user-error type, the registry type, the CLI runner, device
resolution, "a path or a shipped name" lookup, and the safe unpickler.

``pretrain``, ``meta_dataset`` and ``transfer`` all import from here (imports run one way: this module
imports nothing of the project).
"""
from __future__ import annotations

import argparse
import functools
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from fvcore.common.registry import Registry as _FvRegistry


# -- errors ------------------------------------------------------------------------------------------
class UserError(Exception):
    """A problem the user can fix (a file, a key, a value): its message is one sentence naming the file or
    key and the fix.  Every command reports these in one line; any other exception keeps its traceback,
    because it is a bug."""


def user_message(e: UserError) -> str:
    """A ``UserError``'s sentence, also when a DataLoader worker raised it: PyTorch re-raises it in the main
    process with the worker's traceback in the message, whose last line is ``module.Type: <sentence>``."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and type(e).__name__ in head else last


def cli_main(prog: str) -> Callable[[Callable[..., int | None]], Callable[..., int]]:
    """Decorates a command's ``main(argv) -> exit code``: a ``UserError`` prints ``prog: error: ...`` on
    stderr and exits 2; anything else propagates with its traceback."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs) -> int:
            try:
                return int(fn(*args, **kwargs) or 0)
            except UserError as e:
                print(f"{prog}: error: {user_message(e)}", file=sys.stderr)
                return 2
        return wrapper
    return deco


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """``warning: <message>`` on stderr, once per process and message, from the main rank only ($RANK)."""
    if message in _WARNED or int(os.environ.get("RANK", "0")) != 0:
        return
    _WARNED.add(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


CHECKPOINT_HELP = "a ring-pretrain run directory or one of its checkpoint_*.pth files"


def command_parser(prog: str, doc: str | None, checkpoint: str | None = None, optional_checkpoint: bool = False,
                   output: str | None = None, output_required: bool = False) -> argparse.ArgumentParser:
    """The parser every command starts from: its module docstring as help, a positional ``checkpoint``
    (when the command reads one; ``checkpoint`` is its help text) and ``-o/--output`` (when it writes;
    ``output`` says whether a directory or a file)."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if checkpoint:
        p.add_argument("checkpoint", help=checkpoint, **({"nargs": "?", "default": None} if optional_checkpoint else {}))
    if output:
        add_output(p, output, output_required)
    return p


def evaluation_parser(prog: str, doc: str | None, default_dir: str, opts_example: str) -> argparse.ArgumentParser:
    """The parser of a command that evaluates one backbone: the checkpoint (or ``--weights FILE``), ``-o``
    (default ``<run dir>/<default_dir>``), ``--random-init`` (the same architecture untrained: the paired baseline) and trailing KEY VALUE overrides."""
    p = command_parser(prog, doc, checkpoint=CHECKPOINT_HELP, optional_checkpoint=True,
                       output=f"output directory (default: <run dir>/{default_dir}, runs/external/<name>/{default_dir} "
                              "for --weights)")
    p.add_argument("--random-init", action="store_true", help="evaluate the same backbone with random weights")
    add_weights_arguments(p)
    p.add_argument("opts", nargs="*", help=f"KEY VALUE overrides, e.g. {opts_example}")
    return p


WEIGHTS_HELP = ("a weights file instead of a run: torchvision/timm (.pth, .pt, .safetensors), MoCo (.pth.tar), "
                "Lightning (.ckpt), VISSL, DINO or Detectron2 (.pkl) layouts, recognised from the keys")


def add_weights_arguments(parser: argparse.ArgumentParser, evaluation: bool = True) -> None:
    """The flags that say which backbone a weights file holds and what it is called: ``--arch``, ``--prefix``,
    ``--name`` (its rows); for an evaluation, also ``--weights FILE`` (instead of the positional run) and ``-c``
    (the evaluation's dataset and settings, as ``ring-pretrain -c``; a run brings its own)."""
    if evaluation:
        parser.add_argument("--weights", default=None, metavar="FILE", help=WEIGHTS_HELP)
        parser.add_argument("-c", "--config", action="append", default=None,
                            help="with --weights: config files or shipped names for the data and settings")
    parser.add_argument("--name", default=None, help="a weights file's name in the results tables (default: the "
                                                     "file's name)")
    parser.add_argument("--arch", default=None, help="the ResNet the weights are (resnet50, timm:resnet50); default: "
                                                     "read from the blocks and the stem")
    parser.add_argument("--prefix", default=None, help="the key prefix the backbone sits under (e.g. "
                                                       "module.encoder_q.); default: found from the keys")


def weights_source(args: argparse.Namespace) -> tuple[str, dict]:
    """(the run or file to evaluate, ``load_backbone``'s keyword arguments) from a command's arguments."""
    weights = getattr(args, "weights", None)
    if weights and args.checkpoint and not Path(args.checkpoint).exists() and hasattr(args, "opts"):
        # with --weights the optional positional swallowed the first KEY of the overrides
        args.opts, args.checkpoint = [args.checkpoint, *args.opts], None
    given = [x for x in (args.checkpoint, weights) if x]
    if len(given) != 1:
        raise UserError(f"give {'either' if not given else 'only one of'} a ring-pretrain run (positional) or "
                        "--weights FILE.")
    return given[0], {k: getattr(args, k, None) for k in ("config", "arch", "prefix", "name")}


def add_output(parser: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    parser.add_argument("-o", "--output", default=None, required=required, help=help)


# -- registries --------------------------------------------------------------------------------------
class Registry(_FvRegistry):
    """fvcore's ``Registry`` (the one Detectron2 uses), with three additions:

    - ``register(name=...)`` registers under a chosen name (config values are lower-case words such as
      ``moco``), not only under ``obj.__name__``;
    - ``register(config={...})``: a member declares its own settings where it is registered, as
      ``{"SECTION": {"KEY": default}}``; the registry itself may declare the settings every member shares
      (its selector key, for one).  ``pretrain.config.get_defaults`` is the merge of all of them, so a new
      component with a new setting is one new file;
    - ``get(name)`` of an unknown name raises a ``UserError`` naming the config key (``key``) and the
      registered choices.

    Each registry's docstring (``__doc__``) states the contract its members fulfil.  ``names()`` is sorted;
    ``in_order()`` keeps registration order."""

    def __init__(self, name: str, key: str, doc: str = "", config: dict | None = None):
        super().__init__(name)
        self.key = key
        self.__doc__ = doc
        self.config = config or {}
        self.member_config: dict[str, dict] = {}

    def register(self, obj: Any = None, *, name: str | None = None, config: dict | None = None) -> Any:
        if obj is None:
            def deco(func_or_class):
                self._add(name or func_or_class.__name__, func_or_class, config)
                return func_or_class
            return deco
        self._add(name or obj.__name__, obj, config)
        return obj

    def _add(self, name: str, obj: Any, config: dict | None) -> None:
        self._do_register(name, obj)
        self.member_config[name] = config or {}

    @property
    def name(self) -> str:
        """The registry's own name (e.g. ``ESTIMATOR``), as error messages say it."""
        return self._name

    def get(self, name: str) -> Any:
        if name not in self:
            raise UserError(f"{self.key} '{name}' is unknown; choose one of: {', '.join(self.names())}.")
        return super().get(name)

    def names(self) -> list[str]:
        return sorted(n for n, _ in self)

    def in_order(self) -> list[str]:
        return [n for n, _ in self]

    def declared(self) -> dict:
        """The settings this registry and its members declare, merged (``merge_declared``)."""
        return merge_declared([(f"{self.name} registry", self.config)]
                              + [(f"{self.name} '{n}'", c) for n, c in self.member_config.items()])

    def declared_keys(self) -> list[str]:
        """Every declared setting as ``SECTION.KEY``."""
        return [f"{s}.{k}" for s, keys in self.declared().items() for k in keys]


def merge_declared(declarations: Iterable[tuple[str, dict]]) -> dict:
    """``{"SECTION": {"KEY": default}}`` declarations merged; one key declared twice must have one default
    (two components sharing a section, such as IR and CMC's BANK, declare the same values)."""
    out: dict[str, dict] = {}
    seen: dict[str, str] = {}
    for who, decl in declarations:
        for section, keys in decl.items():
            for k, v in keys.items():
                key = f"{section}.{k}"
                if key in seen and out[section][k] != v:
                    raise ValueError(f"{who} declares {key} = {v!r} but {seen[key]} declared {out[section][k]!r}; "
                                     "one setting has one default.")
                out.setdefault(section, {})[k] = v
                seen.setdefault(key, who)
    return out


PLUGINS_ENV = "RINGNCE_PLUGINS"


def load_plugins() -> list[str]:
    """Imports the modules named in $RINGNCE_PLUGINS (comma-separated, importable from ``sys.path``): components
    kept outside this repository (an estimator, an objective, a transfer task) register themselves on import.
    Every process that reads a config or plans a suite calls this, so subprocess stages see them too."""
    import importlib

    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UserError(f"${PLUGINS_ENV} names '{name}', which does not import ({e}); put its folder on "
                            "PYTHONPATH or remove it from the list.") from None
    return names


# -- schemas ---------------------------------------------------------------------------------------
def check_keys(user: dict, ref: dict, where: str, prefix: str = "", error: type[UserError] = UserError,
               what: str = "key") -> None:
    """Every key of ``user`` must exist in ``ref`` (recursively: a mapping where ``ref`` has one, a list or
    tuple where ``ref`` has one); otherwise one sentence naming ``where``, the key and the valid keys."""
    for key, value in (user or {}).items():
        if key not in ref:
            valid = ", ".join(f"{prefix}{k}" for k in sorted(ref))
            raise error(f"{where}: unknown {what} '{prefix}{key}'; valid keys here are: {valid}.")
        expected = ref[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise error(f"{where}: '{prefix}{key}' must be a section (a mapping), not {value!r}.")
            check_keys(value, expected, where, f"{prefix}{key}.", error, what)
        elif isinstance(expected, (list, tuple)) and not isinstance(value, (list, tuple)):
            raise error(f"{where}: '{prefix}{key}' must be a list, got {value!r}.")


# -- devices -----------------------------------------------------------------------------------------
def resolve_device(name: str):
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'; CUDA without a GPU is a UserError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"DEVICE is '{name}' but no CUDA device is available; set DEVICE cpu or auto.")
    return torch.device(name)


# -- files -------------------------------------------------------------------------------------------
def find_file(name: str | os.PathLike, shipped: Path, what: str, suffixes: Iterable[str] = (".yaml",),
              pattern: str = "*.yaml", hint: str = "", error: type[UserError] = UserError) -> Path:
    """``name`` as a path when it is a file, else a file shipped under ``shipped`` (with or without one of
    ``suffixes``); otherwise one sentence listing the shipped names."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (shipped / p, *(shipped / f"{p}{s}" for s in suffixes)):
        if cand.is_file():
            return cand
    names = sorted(str(x.relative_to(shipped).with_suffix("")) for x in shipped.glob(pattern))
    raise error(f"{what} '{name}' does not exist; give a path or one of: {', '.join(names)}{hint}.")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only, so that a data or weights pickle from elsewhere
    cannot run code when it is read."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
        ("__builtin__", "object"), ("builtins", "object"), ("_codecs", "encode"),
        ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5
    })

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a pickle")
