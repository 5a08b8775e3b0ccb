"""A training configuration checked against its store and device before any data is read or memory for
batches allocated: each problem raises ``ConfigError``, naming what is wrong and the override that fixes it.

Checked, in order: trainer settings that would silently break correctness; the store (present, or
buildable from ``data.generate``; the Quijote converter otherwise); the resumed checkpoint against this
configuration; input and target names against the store's fields and varying parameters, and against
what the model predicts; crop and padding against the box and the network (a throwaway model, small,
whose forward runs on the meta device, so no batch or activation memory is allocated); the splits against the number of processes; the memory of one
training step against the device; W&B credentials when logging online (W&B would otherwise prompt).
The store is known from its manifest alone, or, for a mock store still to be generated, from the
generator settings, so a bad configuration stops before the store is built.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from lss_lightning.cosmology import PARAMETER_ALIASES, PARAMETER_NAMES, parameter_name, resolve_prior
from lss_lightning.data.crops import tile_corners
from lss_lightning.data.dataset import CropGeometry, lightcone_geometry_problem
from lss_lightning.data.normalisation import FieldLayout
from lss_lightning.data.splits import split_simulations
from lss_lightning.run import checkpoints
from lss_lightning.run.assemble import TargetKindError, check_task_targets, task_data
from lss_lightning.run.memory import StepMemory, available_bytes, leaf_output_bytes
from lss_lightning.run.wandb import has_credentials, is_offline, wandb_loggers
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import FieldSpec, field_spec
from lss_lightning.tasks.reconstruction import residual_baseline

log = logging.getLogger(__name__)

MEMORY_HEADROOM = 0.9  # use at most this fraction of the free memory
MAX_PROBES = 24  # crops tried when looking for one that works
# keys whose change makes a checkpoint's weights unusable for this configuration
SHAPE_KEYS = (
    "model._target_",
    "model.net",
    "model.loss",
    "model.residual_of",
    "data.inputs",
    "data.targets",
    "data.crop",
    "data.pad",
)


# keys a resumed run may change, with what the change does (a warning, not an error)
RESUME_WARN_KEYS = {
    "model.optimizer.lr": "the optimizer state restored from the checkpoint keeps the old learning rate and the "
    "scheduler goes on from it; start a new run (ckpt_path=null) to train with the new one",
    "data.store": "training goes on with another store's crops (and the checkpoint's normalisation statistics)",
}


class ConfigError(ValueError):
    """A configuration that cannot work; the message says what is wrong and the override that fixes it."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}\n  fix: {fix}")
        self.problem, self.fix = problem, fix


@dataclass(frozen=True)
class StoreFacts:
    """What the checks need to know about a store, from its manifest or from the generator settings."""

    root: Path
    grid: int
    box_size: float
    fields: dict[str, FieldSpec]
    varying: list[str]  # cosmological parameters that differ between its simulations
    simulation_ids: list[str]
    generated: bool  # True: not there yet, data.generate will build it


# -- entry point ------------------------------------------------------------------------------------
def check_training_config(cfg: DictConfig, resume: Path | None = None) -> StoreFacts:
    """Run every check on a composed train config (see the module docstring); returns the store facts."""
    check_trainer(cfg)
    facts = store_facts(cfg.data)
    if resume is not None:
        check_resume(cfg, resume)
    kind = getattr(get_class(cfg.model._target_), "target_kind", "fields")
    check_names(cfg, facts, kind)
    crop, pad = int(cfg.data.crop), int(cfg.data.pad)
    check_box(cfg, facts, kind, crop, pad)
    memory = check_network(cfg, facts, kind, crop, pad)
    check_splits(cfg, facts, crop)
    if memory is not None:
        check_memory(cfg, facts, kind, memory, crop, pad)
    check_wandb(cfg)
    return facts


# -- trainer ------------------------------------------------------------------------------------------
def check_trainer(cfg: DictConfig) -> None:
    if cfg.trainer.get("use_distributed_sampler", False):
        raise ConfigError(
            "trainer.use_distributed_sampler=true would let Lightning's DistributedSampler repeat crops to even "
            "out the ranks (the data module already shares each epoch among the ranks, every crop once)",
            "trainer.use_distributed_sampler=false",
        )


# -- the store ------------------------------------------------------------------------------------------
def store_facts(data: DictConfig) -> StoreFacts:
    """Facts from the store's manifest, or from ``data.generate`` when the store is still to be built."""
    root = Path(str(data.store)).expanduser().resolve()
    if (root / "manifest.json").exists():
        store = FieldStore(root)
        varying = store.varying_parameters()
        return StoreFacts(
            root, store.grid, store.box_size, dict(store.fields), varying, store.simulation_ids, False
        )
    generate = data.get("generate")
    if generate:
        return _facts_from_generator(root, generate)
    convert = data.get("convert")
    if convert:
        command = "python -m lss_lightning.data.quijote " + " ".join(
            f"{k}={v}" for k, v in OmegaConf.to_container(convert, resolve=True).items()
        )
        raise ConfigError(
            f"data.store={root} holds no converted Quijote store (no manifest.json)",
            f"convert Quijote into it first: `{command} store={root}` (README, 'Quijote'), "
            "or point at a converted store with data.store=PATH",
        )
    raise ConfigError(
        f"data.store={root} is not a field store (no manifest.json) and this data config cannot build it",
        f"data.store=PATH of an existing store, or build one with `python -m lss_lightning.mocks store={root}`",
    )


def _facts_from_generator(root: Path, generate: Mapping) -> StoreFacts:
    """The store ``data.generate`` would build, from the generator's own validated settings (halo
    shorthands expanded per mass bin, light cones, ...)."""
    from lss_lightning.mocks.config import MockConfig
    from lss_lightning.mocks.design import design

    try:
        mock = MockConfig.from_mapping(generate, store=str(root))
        fields = {name: field_spec(name, mock.los_axis) for name in mock.fields}
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"data.generate: {err}", "fix the setting named above (conf/mock/default.yaml documents each)"
        ) from None
    varying = []
    if mock.design == "latin_hypercube":
        varying = [p for p in PARAMETER_NAMES if p in resolve_prior(mock.prior)]
    ids = [sim["id"] for sim in design(mock)]  # n_sims boxes, or boxes x cones_per_box light cones
    return StoreFacts(root, mock.grid, mock.box_size, fields, varying, ids, True)


# -- resuming -----------------------------------------------------------------------------------------
def check_resume(cfg: DictConfig, ckpt: Path) -> None:
    """The checkpoint to resume holds the same network, loss, inputs, targets and crop as this run."""
    saved = checkpoints.load_config(ckpt)
    if saved is None:
        raise ConfigError(
            f"{ckpt} holds no lss_config: it was not written by lss-lightning's train.py",
            "ckpt_path=null (start from scratch) or a checkpoint of this project",
        )
    for key in SHAPE_KEYS:
        old = dict(_leaves(key, _select(saved, key)))
        new = dict(_leaves(key, _plain(OmegaConf.select(cfg, key))))
        for leaf in sorted(old.keys() | new.keys()):
            if old.get(leaf) != new.get(leaf):
                was, now = _override_value(old.get(leaf)), _override_value(new.get(leaf))
                raise ConfigError(
                    f"ckpt_path resumes {ckpt}, trained with {leaf}={was}, but this run asks for {leaf}={now}",
                    f"{leaf}={was} to resume it, or ckpt_path=null in a new run directory to start from scratch",
                )
    for key, consequence in RESUME_WARN_KEYS.items():
        old, new = _select(saved, key), _plain(OmegaConf.select(cfg, key))
        if old is not None and old != new:
            log.warning(
                "resuming %s, trained with %s=%s, with %s=%s: %s",
                ckpt,
                key,
                _override_value(old),
                key,
                _override_value(new),
                consequence,
            )


def _leaves(prefix: str, value):
    """(dotted key, value) of every non-mapping value under ``prefix``."""
    if isinstance(value, Mapping):
        for key, sub in value.items():
            yield from _leaves(f"{prefix}.{key}", sub)
    else:
        yield prefix, value


def _select(tree: Mapping, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


# -- names ----------------------------------------------------------------------------------------------
def check_names(cfg: DictConfig, facts: StoreFacts, kind: str) -> None:
    stored = sorted(facts.fields)
    where = f"the store {facts.root}" + (" (to be generated from data.generate)" if facts.generated else "")
    targets = [str(n) for n in cfg.data.targets]
    task = get_class(cfg.model._target_)
    model = task.__name__
    if kind == "fields":  # first: the inputs a model asks for depend on what it predicts
        try:
            check_task_targets(task, targets, facts.fields)
        except TargetKindError as err:
            raise ConfigError(err.problem, err.fix) from None
    inputs = [str(n) for n in cfg.data.inputs]
    for name in inputs:
        if name not in facts.fields:
            raise ConfigError(
                f"data.inputs: {name!r} is not a field of {where}; its fields are {stored}",
                f"data.inputs=[{_closest(name, stored, 'density')}]",
            )
    if kind == "parameters":
        _check_parameter_targets(targets, facts, model, where)
        return
    for name in targets:
        if name not in facts.fields:
            raise ConfigError(
                f"data.targets: {name!r} is not a field of {where}; its fields are {stored}",
                f"data.targets=[{_closest(name, stored, 'velocity')}]",
            )
    check_loss_weight(cfg, facts, where)
    check_residual(cfg, facts, inputs, targets)


def check_loss_weight(cfg: DictConfig, facts: StoreFacts, where: str) -> None:
    """data.loss_weight names a scalar field of the store (per-cell weights of the loss)."""
    name = cfg.data.get("loss_weight")
    if not name:
        return
    stored = sorted(facts.fields)
    if name not in facts.fields:
        raise ConfigError(
            f"data.loss_weight: {name!r} is not a field of {where}; its fields are {stored}",
            "data.loss_weight=halo_mass_rsd with that field in data.generate.fields (a halo store), "
            "or data.loss_weight=null",
        )
    if facts.fields[name].kind != "scalar":
        raise ConfigError(
            f"data.loss_weight: {name!r} is a {facts.fields[name].kind} field; loss weights are one scalar per cell",
            "data.loss_weight=halo_mass_rsd (or another scalar field), or data.loss_weight=null",
        )


def check_residual(cfg: DictConfig, facts: StoreFacts, inputs: list[str], targets: list[str]) -> None:
    """model.residual_of names an input of the target's kind (the baseline the network corrects)."""
    if "residual_of" not in cfg.model:
        return
    try:
        residual_baseline(
            [_layout(facts, n, {}) for n in inputs],
            [_layout(facts, n, {}) for n in targets],
            cfg.model.residual_of,
        )
    except ValueError as err:
        baseline = str(cfg.model.residual_of)
        fix = "model.residual_of=null, or an input field of the target's kind"
        if baseline not in inputs:
            fix = f"data.inputs=[{','.join([*inputs, baseline])}] or model.residual_of=null"
        raise ConfigError(str(err), fix) from None


def _check_parameter_targets(targets: list[str], facts: StoreFacts, model: str, where: str) -> None:
    varying = facts.varying
    if varying:
        fix = f"data.targets=[{','.join(varying)}] (the parameters that vary in this store)"
    else:
        fix = "a store whose cosmologies vary, e.g. data=mocks_lh data.targets=[Omega_m,sigma_8]"
    unknown = [n for n in targets if parameter_name(n) is None]
    if unknown:
        aliases = ", ".join(f"{a}={c}" for a, c in PARAMETER_ALIASES.items())
        raise ConfigError(
            f"model {model} predicts cosmological parameters, but data.targets {unknown} are not parameters "
            f"(known: {', '.join(PARAMETER_NAMES)}; aliases {aliases})",
            fix,
        )
    constant = [n for n in targets if parameter_name(n) not in varying]
    if constant:
        reason = (
            "one cosmology: there is nothing to infer"
            if not varying
            else f"these do not vary, only {varying} do"
        )
        raise ConfigError(f"data.targets {constant}: {where} has {reason} (use a latin-hypercube store)", fix)


def _closest(name: str, options: Sequence[str], default: str) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return close[0] if close else (default if default in options else options[0])


# -- geometry -----------------------------------------------------------------------------------------
def check_box(cfg: DictConfig, facts: StoreFacts, kind: str, crop: int, pad: int) -> None:
    """Crop and padding are cells of the store's grid: the target crop must fit inside the box."""
    if crop < 1 or pad < 0:
        raise ConfigError(
            f"data.crop={crop}, data.pad={pad}: need crop >= 1 and pad >= 0", "data.crop=20 data.pad=6"
        )
    axes = {facts.fields[str(n)].axes for n in cfg.data.inputs if str(n) in facts.fields}
    problem = lightcone_geometry_problem(axes, facts.grid, CropGeometry(crop, pad), facts.root)
    if problem:
        raise ConfigError(problem, f"data.crop={facts.grid} data.pad=0")
    if crop <= facts.grid:
        return
    suggestion = largest_working_crop(cfg, facts, kind, facts.grid)
    raise ConfigError(
        f"data.crop={crop} cells is larger than the {facts.grid}^3-cell boxes of {facts.root}",
        suggestion or f"data.crop={facts.grid}",
    )


def check_network(cfg: DictConfig, facts: StoreFacts, kind: str, crop: int, pad: int) -> StepMemory | None:
    """The network maps crop + 2 pad cells to the target (or takes the crop); returns the step memory."""
    task = build_task(cfg, facts, kind, crop, pad, fix_if_broken=True)
    net = task.net
    if hasattr(net, "required_padding"):  # a valid-convolution U-net: input = crop + 2 pad exactly
        _check_unet_padding(net, crop, pad)
    if hasattr(task, "check_input_size"):  # parameter tasks: image size, P(k) shells of the crop
        try:
            task.check_input_size(crop + 2 * pad)
        except ValueError as err:
            raise ConfigError(str(err), "the data.crop or model setting the message names") from None
    sample = _sample_bytes(cfg, facts, kind, crop, pad)
    try:
        activations = leaf_output_bytes(net, crop + 2 * pad)
    except NotImplementedError as err:  # an operation without a meta kernel: cannot estimate
        log.warning("memory of a training step not estimated (%s)", str(err).splitlines()[0])
        return None
    except (ValueError, RuntimeError) as err:
        raise ConfigError(
            f"the network cannot take {crop + 2 * pad}^3 inputs (data.crop={crop}, data.pad={pad}): {err}",
            largest_working_crop(cfg, facts, kind, facts.grid) or "another data.crop",
        ) from None
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    return StepMemory(activations, sample, params)


def _check_unet_padding(net, crop: int, pad: int) -> None:
    try:
        net.check_crop_padding(crop, pad)
    except ValueError as err:
        try:
            fix = f"data.pad={net.required_padding(crop)}"
        except ValueError:
            near = net.geometry.achievable_outputs_near(crop, per_side=1)
            fix = " or ".join(f"data.crop={c} data.pad={net.required_padding(c)}" for c in near)
        raise ConfigError(str(err), fix) from None


def build_task(cfg: DictConfig, facts: StoreFacts, kind: str, crop: int, pad: int, fix_if_broken=False):
    """A throwaway task module (not compiled) for the data this config describes; raises ConfigError."""
    transforms = cfg.data.get("transforms") or {}
    inputs = [_layout(facts, n, transforms) for n in cfg.data.inputs]
    if kind == "fields":
        kwargs = task_data(kind, inputs, [_layout(facts, n, {}) for n in cfg.data.targets])
    else:
        names = [parameter_name(str(n)) for n in cfg.data.targets]
        kwargs = task_data(kind, inputs, parameter_names=names, input_size=crop + 2 * pad)
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    if "compile" in model_cfg:
        model_cfg.compile = False
    try:
        return instantiate(model_cfg, **kwargs)
    except Exception as err:
        cause = err.__cause__ or err  # Hydra wraps the constructor's error
        if not fix_if_broken:
            raise
        raise ConfigError(
            f"the model cannot be built for {crop + 2 * pad}^3 inputs (data.crop={crop}, data.pad={pad}): {cause}",
            largest_working_crop(cfg, facts, kind, min(facts.grid, crop)) or "another data.crop",
        ) from None


def _layout(facts: StoreFacts, name: str, transforms: Mapping) -> FieldLayout:
    spec = facts.fields[str(name)]
    return FieldLayout(str(name), spec.kind, spec.channels, str(transforms.get(name, "none")))


def largest_working_crop(cfg: DictConfig, facts: StoreFacts, kind: str, limit: int) -> str | None:
    """``data.crop=c data.pad=p`` for the largest crop c <= limit that the network takes and whose training
    step fits in memory at the configured batch size, else the largest it takes; None if none (at most
    ``MAX_PROBES`` crops are tried each way)."""
    return _crop_search(cfg, facts, kind, limit, _budget(cfg)) or _crop_search(
        cfg, facts, kind, limit, float("inf")
    )


def _crop_search(cfg: DictConfig, facts: StoreFacts, kind: str, limit: int, budget: float) -> str | None:
    batch = int(cfg.data.batch_size)
    pad = int(cfg.data.pad) if kind == "fields" else 0
    field_net = build_task(cfg, facts, kind, limit, pad).net if kind == "fields" else None  # any crop
    probes = 0
    for c in range(limit, 0, -1):
        if hasattr(field_net, "required_padding"):
            try:
                pad = field_net.required_padding(c)
            except ValueError:
                continue
        probes += 1
        if probes > MAX_PROBES:
            return None
        try:
            net = field_net if field_net is not None else build_task(cfg, facts, kind, c, pad).net
            params = sum(p.numel() * p.element_size() for p in net.parameters())
            memory = StepMemory(
                leaf_output_bytes(net, c + 2 * pad), _sample_bytes(cfg, facts, kind, c, pad), params
            )
        except NotImplementedError:  # cannot estimate the memory: the largest crop the network takes
            return f"data.crop={c} data.pad={pad}"
        except Exception:
            continue
        if memory.total(batch) <= budget:
            return f"data.crop={c} data.pad={pad}"
    return None


def _sample_bytes(cfg: DictConfig, facts: StoreFacts, kind: str, crop: int, pad: int) -> int:
    """float32 bytes of one input crop and its target."""
    c_in = sum(facts.fields[str(n)].channels for n in cfg.data.inputs)
    c_out = sum(facts.fields[str(n)].channels for n in cfg.data.targets) if kind == "fields" else 0
    return 4 * (c_in * (crop + 2 * pad) ** 3 + c_out * crop**3 + len(cfg.data.targets))


# -- splits -------------------------------------------------------------------------------------------
def check_splits(cfg: DictConfig, facts: StoreFacts, crop: int) -> None:
    """Enough simulations for the splits, and at least one crop per process in training and validation."""
    fractions = {k: float(v) for k, v in (cfg.data.get("split") or {}).items() if k != "seed"}
    if not fractions:
        return
    try:
        splits = split_simulations(
            facts.simulation_ids, fractions, int((cfg.data.split or {}).get("seed", 0))
        )
    except ValueError as err:
        raise ConfigError(
            f"data.split: {err}", "data.split={train: 0.75, val: 0.125, test: 0.125, seed: 0}"
        ) from None
    processes = _processes(cfg)
    tiles = len(tile_corners(facts.grid, crop))
    per_sim = int(cfg.data.get("train_crops_per_sim") or tiles)
    train = len(splits["train"]) * per_sim
    val = len(splits["val"] or splits["train"][:1]) * tiles
    if processes and train < processes:
        raise ConfigError(
            f"{train} training crops per epoch cannot be shared by {processes} processes",
            f"data.train_crops_per_sim={-(-processes // max(1, len(splits['train'])))}",
        )
    if processes and val < processes:
        raise ConfigError(
            f"{val} validation crops cannot be shared by {processes} processes (each needs one)",
            "more validation simulations, e.g. data.split={train: 0.5, val: 0.5, test: 0.0, seed: 0}",
        )


def _processes(cfg: DictConfig) -> int | None:
    """Processes of a run (devices x nodes), when the trainer config fixes it."""
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    if isinstance(devices, int) and isinstance(nodes, int):
        return devices * nodes
    if isinstance(devices, list | tuple) or OmegaConf.is_list(devices):
        return len(devices) * int(nodes)
    return None


# -- memory -------------------------------------------------------------------------------------------
def _device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))  # this rank's GPU
    return torch.device("cpu")


def _budget(cfg: DictConfig) -> int:
    return int(MEMORY_HEADROOM * available_bytes(_device(cfg)))


def check_memory(
    cfg: DictConfig, facts: StoreFacts, kind: str, memory: StepMemory, crop: int, pad: int
) -> None:
    """One training step's estimated memory (``memory``) against what the training device has free."""
    batch = int(cfg.data.batch_size)
    device, budget = _device(cfg), _budget(cfg)
    if device.type == "cpu":  # the loaders' chunk caches share the host: train and validation workers
        budget -= (
            int(float(cfg.data.get("chunk_cache_mb", 0)) * 2**20) * 2 * max(1, int(cfg.data.num_workers))
        )
    need = memory.total(batch)
    if need <= budget:
        return
    largest = memory.largest_batch(budget)
    fix = f"data.batch_size={largest}" if largest >= 1 else largest_working_crop(cfg, facts, kind, crop - 1)
    raise ConfigError(
        f"a training step of data.batch_size={batch} with {crop + 2 * pad}^3 input crops needs about "
        f"{need / 2**30:.1f} GiB (estimated, lss_lightning/memory.py), but the {device.type} has "
        f"{budget / MEMORY_HEADROOM / 2**30:.1f} GiB free",
        fix or "a smaller data.crop or data.batch_size",
    )


# -- tracking -------------------------------------------------------------------------------------------
def check_wandb(cfg: DictConfig) -> None:
    """Online W&B logging needs credentials; without them wandb.init would stop and prompt for a key."""
    for name, logger in wandb_loggers(cfg):
        if not is_offline(logger) and not has_credentials():
            raise ConfigError(
                "W&B online logging needs credentials (WANDB_API_KEY, or `wandb login` on this machine); "
                "none were found, and wandb would stop to prompt for them",
                f"logger.{name}.offline=true (sync later with `wandb sync`), or run `wandb login` first",
            )
