"""Pretraining configuration: defaults in code, YAML files with ``_BASE_``, ``KEY VALUE`` overrides.

The config system is fvcore's ``CfgNode`` (the one Detectron2 users know).  Unknown keys are errors
that name the file and list the valid keys at that level.
"""
from __future__ import annotations

import os
from pathlib import Path

from fvcore.common.config import CfgNode as _FvCfgNode

from pretrain.common import UserError, check_keys, find_file, load_plugins, merge_declared

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(UserError):
    """A user-fixable problem with a config file or override (one sentence)."""


class CfgNode(_FvCfgNode):
    """fvcore's CfgNode; the subclass exists so that ``type(cfg)`` round-trips through merges."""


def get_defaults() -> CfgNode:
    C = CfgNode()
    C.SEED = 1337
    C.DEVICE = "auto"  # auto | cpu | cuda
    C.OUTPUT_DIR = ""

    C.DATA = CfgNode()
    C.DATA.NAME = "synthetic"  # see pretrain.data.DATASET_REGISTRY
    C.DATA.ROOT = ""  # dataset folder; "" uses the dataset's default location
    C.DATA.TRAIN_SPLIT = "train"  # the split pretraining reads (stl10: "train+unlabeled")
    C.DATA.TEST_SPLIT = "test"  # the split the kNN monitor and linear evaluation score
    C.DATA.IMAGE_SIZE = 32
    C.DATA.AUGMENT = "mocov2"  # ir | mocov2 | cmc (see pretrain.data.transforms.AUGMENTATION_REGISTRY)
    # loader: PIL per image in the loader's workers | device: batched tensors on the training device (the
    # loader only decodes; images of one size; pretrain/data/batch_transforms.py)
    C.DATA.AUGMENT_ON = "loader"
    # loader: images decoded in the loader's workers | device: the workers only read JPEG files; the training
    # step decodes them on the training device (torchvision.io.decode_jpeg, nvJPEG on CUDA); needs
    # AUGMENT_ON device and JPEG files (imagefolder)
    C.DATA.DECODE_ON = "loader"
    # loader worker processes; -1: auto (none on a CPU, a share of the cores on a GPU: pretrain/data/workers.py)
    C.DATA.NUM_WORKERS = -1
    C.DATA.SUBSET = 0  # > 0: use only the first N training images (CPU runs)
    C.DATA.SYNTHETIC_SIZE = 2000  # images per split of the built-in procedural dataset
    C.DATA.SYNTHETIC_COLORS = "random"  # random | palette: four fixed colours (pretrain/data/synthetic.py says why)

    C.MODEL = CfgNode()
    C.MODEL.BACKBONE = "resnet18"  # torchvision name, or "timm:<name>"
    C.MODEL.SMALL_STEM = True  # 3x3 stride-1 stem without max-pool for 32-px images
    C.MODEL.WIDTH = 64  # channels of the stem and layer1 (layers 2-4: x2, x4, x8); 64 = the standard ResNet
    C.MODEL.HEAD_HIDDEN = 0  # 0: same as the backbone's feature dim (dim -> dim -> OUT_DIM)
    C.MODEL.OUT_DIM = 128
    C.MODEL.CHANNELS_LAST = True  # NHWC model and inputs (CUDA and CPU)
    C.MODEL.COMPILE = False  # torch.compile every encoder (in place: checkpoints keep their parameter names)

    C.OBJECTIVE = CfgNode()
    C.OBJECTIVE.NAME = "moco"  # ir | cmc | moco | simclr (pretrain.contrastive.objectives.OBJECTIVE_REGISTRY)
    C.OBJECTIVE.TEMPERATURE = 0.07
    # OBJECTIVE.ESTIMATOR, RING.*, DCL.*, HCL.*, MOCHI.*, MOCO.*, BANK.*, CMC.*: declared by the components that
    # read them, where they register (declared_defaults below; README "Extending")

    C.SOLVER = CfgNode()
    C.SOLVER.EPOCHS = 200
    C.SOLVER.BATCH_SIZE = 256  # global batch, split over processes
    C.SOLVER.OPTIMIZER = "sgd"  # pretrain.engine.optimizers.OPTIMIZER_REGISTRY
    C.SOLVER.LR = 0.03
    C.SOLVER.MOMENTUM = 0.9
    C.SOLVER.WEIGHT_DECAY = 1e-4
    C.SOLVER.SCHEDULE = "step"  # step | cosine (pretrain.engine.lr_schedules.LR_SCHEDULE_REGISTRY)
    C.SOLVER.STEPS = (0.68, 0.83)  # step schedule: fractions of training (136/200, 166/200)
    C.SOLVER.GAMMA = 0.1
    C.SOLVER.WARMUP_EPOCHS = 0.0
    C.SOLVER.AMP = True  # bf16 autocast on CUDA (similarities, ring and logits stay fp32)
    C.SOLVER.AMP_CPU = False  # bf16 autocast on CPU too: an explicit opt-in (CPU numbers unchanged by default)
    C.SOLVER.MAX_ITERS = 0  # > 0: stop after this many iterations (smoke runs, benchmarks)

    C.CHECKPOINT = CfgNode()
    C.CHECKPOINT.PERIOD_ITERS = 500  # also written at every epoch end
    # retention: checkpoint_last.pth always; checkpoint_eNNNN.pth every KEEP_EVERY epochs and after the last one
    C.CHECKPOINT.KEEP_EVERY = 50

    # Weights from elsewhere evaluated in place of a ring-pretrain run (ring-lincls --weights FILE, ...): set by
    # pretrain.evaluation.pretrained.load_backbone from the file, recorded so that its rows are its own
    C.WEIGHTS = CfgNode()
    C.WEIGHTS.NAME = ""  # the row's name (default: the file's name)
    C.WEIGHTS.SHA256 = ""  # the file's content hash: two files never share a row
    C.WEIGHTS.FILE = ""
    C.WEIGHTS.FORMAT = ""  # what the file was recognised as (pretrain/modeling/weight_formats.py)
    C.WEIGHTS.PREFIX = ""  # the key prefix the backbone sat under

    C.LOG = CfgNode()
    C.LOG.PERIOD = 10
    C.LOG.TENSORBOARD = True
    C.LOG.PROGRESS = True

    C.KNN = CfgNode()
    C.KNN.ENABLED = True
    C.KNN.PERIOD_EPOCHS = 1
    C.KNN.K = 200
    C.KNN.TEMPERATURE = 0.07
    C.KNN.MAX_TRAIN = 0  # > 0: use at most this many training images as the kNN memory
    C.KNN.MAX_TEST = 0

    C.LINCLS = CfgNode()
    C.LINCLS.PROTOCOL = "cached"  # cached | paper | moco (pretrain/evaluation/protocols.py)
    C.LINCLS.EPOCHS = 100
    C.LINCLS.BATCH_SIZE = 256
    C.LINCLS.LR = 0.01  # LR, MOMENTUM, WEIGHT_DECAY, SCHEDULE, STEPS: the cached protocol's (the others fix theirs)
    C.LINCLS.MOMENTUM = 0.9
    C.LINCLS.WEIGHT_DECAY = 1e-5
    C.LINCLS.SCHEDULE = "step"
    C.LINCLS.STEPS = (0.6, 0.8)
    C.LINCLS.MAX_TRAIN = 0
    C.LINCLS.MAX_TEST = 0
    for section, keys in declared_defaults().items():
        node = C.setdefault(section, CfgNode())
        for k, v in keys.items():
            if k in node:
                raise ValueError(f"{section}.{k} is declared by a component and also set in get_defaults; keep one.")
            node[k] = CfgNode(v) if isinstance(v, dict) else v
    return C


def negative_sampling_registries() -> list:
    """The registries whose members' settings make one estimator differ from another: estimators, samplers and
    the ring's schedules (plugins loaded)."""
    from pretrain.contrastive.estimators import ESTIMATOR_REGISTRY
    from pretrain.contrastive.ring_schedules import RING_SCHEDULE_REGISTRY
    from pretrain.contrastive.samplers import SAMPLER_REGISTRY

    load_plugins()
    return [ESTIMATOR_REGISTRY, SAMPLER_REGISTRY, RING_SCHEDULE_REGISTRY]


def component_registries() -> list:
    """Every registry whose members declare settings: the objectives and the negative-sampling ones."""
    from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY

    return [OBJECTIVE_REGISTRY, *negative_sampling_registries()]


def declared_defaults() -> dict:
    """``{"SECTION": {"KEY": default}}``: the settings the registered components declare, merged."""
    return merge_declared((r.name, r.declared()) for r in component_registries())


def estimator_keys() -> tuple[str, ...]:
    """``SECTION.KEY`` of every setting the negative-sampling components declare (``OBJECTIVE.ESTIMATOR``
    included): what makes one estimator's run differ from NCE's with the same configuration."""
    return tuple(sorted({k for r in negative_sampling_registries() for k in r.declared_keys()}))


def get_key(cfg: CfgNode, dotted: str):
    """cfg['A']['B'] for 'A.B'."""
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _describe_valid(node: CfgNode, prefix: str) -> str:
    return ", ".join(f"{prefix}{k}" for k in sorted(node.keys()))


def _check_keys(user: dict, ref: CfgNode, source: str) -> None:
    check_keys({k: v for k, v in user.items() if k != "_BASE_"}, ref, source, error=ConfigError, what="config key")


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A path as given, or the name of a config shipped in pretrain/configs (with or without .yaml)."""
    return find_file(path, CONFIG_DIR, "config file", pattern="**/*.yaml",
                     hint=", or <dataset>/<objective>_<estimator>[_anneal] (e.g. cifar10/moco_ring)", error=ConfigError)


def composed(name: str | os.PathLike) -> tuple[list[Path], dict] | None:
    """A paper config by name, ``<dataset>/<objective>_<estimator>[_anneal]`` (e.g. ``cifar10/moco_ring``), as the
    composition it stands for: ``data/<dataset>`` then ``objective/<objective>`` then ``anneal`` (when asked),
    with ``OBJECTIVE.ESTIMATOR <estimator>``.  None when ``name`` is a file or does not have that form."""
    text = str(name)
    if Path(text).is_file() or text.count("/") != 1:
        return None
    dataset, rest = text.removesuffix(".yaml").split("/")
    anneal = rest.endswith("_anneal")
    rest = rest.removesuffix("_anneal")
    for objective in sorted((CONFIG_DIR / "objective").glob("*.yaml")):
        if rest.startswith(objective.stem + "_") and (CONFIG_DIR / "data" / f"{dataset}.yaml").is_file():
            estimator = rest[len(objective.stem) + 1:]
            from pretrain.contrastive.estimators import estimator_names

            if estimator not in estimator_names():
                raise ConfigError(f"config '{text}': no estimator '{estimator}' is registered; choose one of: "
                                  f"{', '.join(sorted(estimator_names()))}.")
            files = [CONFIG_DIR / "data" / f"{dataset}.yaml", objective] + ([CONFIG_DIR / "anneal.yaml"] if anneal else [])
            return files, {"OBJECTIVE": {"ESTIMATOR": estimator}}
    return None


def _load_yaml_with_bases(path: Path) -> dict:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of KEY: value.")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    base_path = Path(base) if os.path.isabs(base) else path.parent / base
    if not base_path.is_file():  # a shipped name (e.g. paper_base, data/cifar10)
        shipped = [CONFIG_DIR / base, CONFIG_DIR / f"{base}.yaml"]
        base_path = next((b for b in shipped if b.is_file()), None)
        if base_path is None:
            raise ConfigError(f"{path}: _BASE_ '{base}' does not exist (looked next to the file and among the shipped "
                              f"configs in {CONFIG_DIR}).")
    merged = _load_yaml_with_bases(base_path)
    _deep_update(merged, data)
    return merged


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def _coerce(value, ref):
    """fvcore type-checks strictly: YAML lists become tuples and ints become floats where the default is one."""
    if isinstance(ref, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(ref, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _coerce_tuples(user: dict, ref: CfgNode) -> dict:
    out = {}
    for k, v in user.items():
        r = ref.get(k)
        out[k] = _coerce_tuples(v, r) if isinstance(r, CfgNode) and isinstance(v, dict) else _coerce(v, r)
    return out


# Values a run cannot use, checked whenever a config is loaded: "KEY": (lowest allowed, whether it is allowed
# itself).  A component checks its own settings where it builds (MOCO.QUEUE_SIZE, RING.INNER, ...).
LOWER_BOUNDS = {
    "SOLVER.EPOCHS": (1, True), "SOLVER.BATCH_SIZE": (1, True), "SOLVER.LR": (0, False),
    "SOLVER.MOMENTUM": (0, True), "SOLVER.WEIGHT_DECAY": (0, True), "SOLVER.WARMUP_EPOCHS": (0, True),
    "SOLVER.MAX_ITERS": (0, True), "OBJECTIVE.TEMPERATURE": (0, False),
    "DATA.IMAGE_SIZE": (1, True), "DATA.NUM_WORKERS": (-1, True), "DATA.SUBSET": (0, True),
    "MODEL.WIDTH": (1, True), "MODEL.OUT_DIM": (1, True), "MODEL.HEAD_HIDDEN": (0, True),
    "CHECKPOINT.PERIOD_ITERS": (1, True), "CHECKPOINT.KEEP_EVERY": (1, True), "LOG.PERIOD": (1, True),
    "KNN.PERIOD_EPOCHS": (1, True), "KNN.K": (1, True), "KNN.TEMPERATURE": (0, False),
    "KNN.MAX_TRAIN": (0, True), "KNN.MAX_TEST": (0, True),
    "LINCLS.EPOCHS": (1, True), "LINCLS.BATCH_SIZE": (1, True), "LINCLS.LR": (0, False),
    "LINCLS.MOMENTUM": (0, True), "LINCLS.WEIGHT_DECAY": (0, True), "LINCLS.MAX_TRAIN": (0, True),
    "LINCLS.MAX_TEST": (0, True),
}


def check_values(cfg: CfgNode, source: str = "config") -> None:
    """Every bounded setting within its bound (``LOWER_BOUNDS``), else one sentence naming the key."""
    for key, (low, inclusive) in LOWER_BOUNDS.items():
        value = get_key(cfg, key)
        if value < low or (value == low and not inclusive):
            bound = f">= {low}" if inclusive else f"> {low}"
            raise ConfigError(f"{source}: {key} must be {bound}, got {value}; set it in the config file or as "
                              f"'{key} VALUE' on the command line.")


def _kind(ref) -> str:
    return {bool: "True or False", int: "an integer", float: "a number", str: "a string",
            tuple: "a list such as [1, 2]"}.get(type(ref), type(ref).__name__)


def type_mismatch(key: str, value, ref) -> str | None:
    """One sentence when ``value`` (decoded) cannot be set where the default is ``ref``, else None."""
    if ref is None or isinstance(ref, CfgNode):
        return None
    ok = (isinstance(value, bool) if isinstance(ref, bool) else
          isinstance(value, int) and not isinstance(value, bool) if isinstance(ref, int) else
          isinstance(value, (int, float)) and not isinstance(value, bool) if isinstance(ref, float) else
          isinstance(value, (list, tuple)) if isinstance(ref, tuple) else isinstance(value, type(ref)))
    return None if ok else f"{key} must be {_kind(ref)} (its default is {ref!r}), got {value!r}"


def closest_key(cfg, dotted: str) -> str:
    """`` (did you mean SECTION.KEY?)`` for the existing key nearest to an unknown ``dotted`` one (any CfgNode,
    Detectron2's too), or ""."""
    import difflib

    node, parts = cfg, dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return ""
        if part not in node:
            close = difflib.get_close_matches(part, list(node.keys()), n=1)
            return f" (did you mean {'.'.join(parts[:i] + close[:1])}?)" if close else ""
        node = node[part]
    return ""


def merge_overrides(cfg: CfgNode, opts: list[str], source: str = "command line") -> CfgNode:
    if len(opts) % 2:
        raise ConfigError(f"{source}: overrides come in KEY VALUE pairs; got an odd number ({' '.join(opts)}).")
    opts = list(opts)
    for i_key, key in enumerate(opts[0::2]):
        node, parts = cfg, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, CfgNode) or part not in node:
                prefix = ".".join(parts[:i]) + ("." if i else "")
                valid = _describe_valid(node, prefix) if isinstance(node, CfgNode) else "(none)"
                hint = closest_key(cfg, key)
                raise ConfigError(f"{source}: unknown config key '{key}'{hint}; valid keys here are: {valid}.")
            node = node[part]
        value = _coerce(_decode(opts[2 * i_key + 1]), node)
        problem = type_mismatch(key, value, node)
        if problem:
            raise ConfigError(f"{source}: {problem}.")
        opts[2 * i_key + 1] = value
    try:
        cfg.merge_from_list(opts)
    except (ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f"{source}: bad override value ({e}).") from None
    check_values(cfg, source)
    return cfg


def _decode(text):
    """A command-line value as Python sees it ('3' -> 3, '[1, 2]' -> [1, 2], 'abc' -> 'abc')."""
    from ast import literal_eval

    if not isinstance(text, str):
        return text
    try:
        return literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _check_types(user: dict, ref: CfgNode, source: str, prefix: str = "") -> None:
    for k, v in user.items():
        r = ref.get(k)
        if isinstance(r, CfgNode) and isinstance(v, dict):
            _check_types(v, r, source, f"{prefix}{k}.")
        elif (problem := type_mismatch(prefix + k, _coerce(v, r), r)):
            raise ConfigError(f"{source}: {problem}.")


def _merge_user(cfg: CfgNode, user: dict, source: str) -> None:
    _check_keys(user, cfg, source)
    _check_types({k: v for k, v in user.items() if k != "_BASE_"}, cfg, source)
    try:
        cfg.merge_from_other_cfg(CfgNode(_coerce_tuples(user, cfg)))
    except (ValueError, TypeError, AssertionError, KeyError) as e:
        raise ConfigError(f"{source}: bad value ({e}).") from None


def merge_file(cfg: CfgNode, path: str | os.PathLike) -> CfgNode:
    """One config file (with its _BASE_ chain), or a composed paper name (``composed``), merged into ``cfg``."""
    parts = composed(path)
    if parts:
        files, extra = parts
        for f in files:
            _merge_user(cfg, _load_yaml_with_bases(f), str(f))
        _merge_user(cfg, extra, str(path))
        return cfg
    p = resolve_config_path(path)
    _merge_user(cfg, _load_yaml_with_bases(p), str(p))
    return cfg


def load_config(path=None, opts: list[str] | None = None, defaults: CfgNode | None = None) -> CfgNode:
    """defaults <- each file in turn (a path, a shipped name or a list of them, each with its _BASE_ chain; later
    files win) <- KEY VALUE overrides; the result is frozen."""
    cfg = (defaults or get_defaults()).clone()
    for p in ([path] if isinstance(path, (str, os.PathLike)) else path or []):
        merge_file(cfg, p)
    if opts:
        merge_overrides(cfg, opts)
    else:
        check_values(cfg)
    cfg.freeze()
    return cfg


# Keys earlier versions wrote into run directories and checkpoints, since removed: dropped when a saved
# config is read back, so that older runs can still be evaluated and exported.
REMOVED_KEYS = {"LINCLS": ("AUGMENT",), "RING": ("STEP_EPOCHS", "STEP_GAMMA"), "CHECKPOINT": ("KEEP_EPOCHS",)}


def config_from_yaml_str(text: str) -> CfgNode:
    """Rebuild a config saved in a checkpoint or run directory (keys unknown to this version are errors)."""
    import yaml

    cfg = get_defaults()
    user = yaml.safe_load(text) or {}
    for section, keys in REMOVED_KEYS.items():
        for k in keys:
            (user.get(section) or {}).pop(k, None)
    _check_keys(user, cfg, "saved config")
    cfg.merge_from_other_cfg(CfgNode(_coerce_tuples(user, cfg)))
    cfg.freeze()
    return cfg


# Keys that do not change what a run measures: the seed (it varies within a table cell), where things are
# read or written, how the run is logged and checkpointed, and the memory layout.
NOT_RESULT_KEYS = ("SEED", "DEVICE", "OUTPUT_DIR", "DATA.ROOT", "DATA.NUM_WORKERS", "MODEL.CHANNELS_LAST", "MOCO.BN_PASSES",
                   "LOG.", "WEIGHTS.FILE", "WEIGHTS.FORMAT", "WEIGHTS.PREFIX",
                   "CHECKPOINT.")


def result_fingerprint(cfg: CfgNode) -> dict[str, str]:
    """The resolved configuration as flat ``{"SECTION.KEY": value}``, minus ``NOT_RESULT_KEYS``: what a results
    table keys its cells by, so that runs differing only in seed or paths share a cell and any other
    difference (backbone, annealing, protocol) keeps them apart."""
    flat: dict[str, str] = {}

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            elif not any(key == n or (n.endswith(".") and key.startswith(n)) for n in NOT_RESULT_KEYS):
                flat[key] = str(list(v) if isinstance(v, tuple) else v)

    walk(cfg, "")
    return flat


def provenance(cfg: CfgNode, random_init: bool = False) -> dict:
    """What a summary records about the model it evaluated: method, estimator, backbone, dataset, seed and the
    result fingerprint (``random_init``: the same architecture untrained, its method ``random_init``)."""
    external = bool(cfg.WEIGHTS.SHA256)  # weights from a file (load_backbone): the row is the file's
    extra = {"name": cfg.WEIGHTS.NAME, "weights": {"file": cfg.WEIGHTS.FILE, "sha256": cfg.WEIGHTS.SHA256,
                                                   "format": cfg.WEIGHTS.FORMAT}} if external else {}
    return {"method": "random_init" if random_init else ("external" if external else cfg.OBJECTIVE.NAME),
            "estimator": "none" if random_init or external else cfg.OBJECTIVE.ESTIMATOR, **extra,
            "backbone": cfg.MODEL.BACKBONE, "dataset": cfg.DATA.NAME, "seed": cfg.SEED,
            "config": result_fingerprint(cfg)}


def row_name(summary: dict) -> str:
    """How a command names the backbone of a summary: the weights file's name, ``random init``, or
    ``<method>-<estimator>``."""
    if summary["method"] == "random_init":
        return "random init"
    return summary.get("name") or f"{summary['method']}-{summary['estimator']}"
