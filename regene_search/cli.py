"""Command line: parse arguments, call the pipeline or the report, print; nothing else."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from . import __version__
from .config import BUDGETS, Budget, GENERATORS, IMAGE_THRESHOLDS, SAMPLERS, SCHEDULERS, STAGES, RunSpec
from .errors import Interrupted, UserError
from .search.pareto import PROMOTION_METHODS

DEFAULT_RESULTS = "results"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, exit code 2, and shows defaults in --help."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, formatter_class=_DefaultsInHelp, **kwargs)

    def error(self, message: str) -> None:
        self.exit(2, f"regene-search: error: {message}\n")


class _DefaultsInHelp(argparse.HelpFormatter):
    """Appends `(default: X)` to an option's help unless the help already says its default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS)) or not action.option_strings:
            return help_text
        shown = ",".join(map(str, action.default)) if isinstance(action.default, tuple) else "%(default)s"
        return f"{help_text} (default: {shown})"


def _by_budget(field: str) -> str:
    """A Budget field's value per budget, for --help: "smoke tpe, cpu-hour tpe, default random, paper random"."""
    return ", ".join(f"{name} {getattr(budget, field)}" for name, budget in BUDGETS.items())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _above_one(text: str) -> float:
    value = float(text)
    if not 1 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number > 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _labelled_fraction(text: str) -> float:
    from .data.dataset import check_labelled_fraction

    try:
        return check_labelled_fraction(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text}") from None


def _counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(","))
    if not counts or any(n < 2 for n in counts):
        raise argparse.ArgumentTypeError(f"each n must be >= 2 (a convex combination of at least two latents), got {text}")
    return counts


def _comma_list(kind: str, choices: tuple[str, ...]):
    """An argparse type: a comma list of `choices`, each once, in the order given."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
        for name in names:
            if name not in choices:
                raise argparse.ArgumentTypeError(f"unknown {kind} {name!r}; choose from {','.join(choices)}")
        if not names:
            raise argparse.ArgumentTypeError(f"no {kind} given")
        return names

    parse.__name__ = f"{kind} list"  # argparse names the type in its messages
    return parse


_stages = _comma_list("stage", STAGES)
_generators = _comma_list("generator", GENERATORS)


def _weights(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3 or any(p < 0 for p in parts):
        raise argparse.ArgumentTypeError("expects three non-negative weights: accuracy,decoder_mae,latent_sparsity")
    return tuple(parts)  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="regene-search", description="Distributed multi-objective hyperparameter search for ReGene.")
    parser.add_argument("--version", action="version", version=f"regene-search {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="search -> decoder -> generate -> evaluate on a dataset")
    run.add_argument("dataset", nargs="?", help="mnist, fashion-mnist, cifar10, celeba, shapes or imagefolder:PATH")
    run.add_argument("--data-dir", help="local copy of the dataset (nothing downloads without it)")
    run.add_argument("--budget", choices=sorted(BUDGETS), default="default", help="data subset, epochs, trials and probe size")
    run.add_argument("--trials", type=_positive_int, help="number of trials (default: the budget's)")
    run.add_argument("--space", help="search-space TOML (default: the packaged search_spaces/DATASET.toml)")
    run.add_argument(
        "--results", default=DEFAULT_RESULTS, help="results root: a folder or a pyarrow.fs URI such as s3://bucket/prefix (default: results/)"
    )
    run.add_argument("--name", help="run name (default: a timestamp)")
    run.add_argument("--address", help="join a Ray cluster: auto or HOST:PORT (default: start a local one)")
    run.add_argument("--cpus-per-trial", type=_positive_float, default=1.0, help="CPUs each trial holds (> 0; fractions share a core)")
    run.add_argument("--gpus-per-trial", type=_non_negative_float, default=0.0, help="fractions share a GPU between trials")
    run.add_argument("--max-concurrent", type=_positive_int, help="trials running at once (default: what the cluster holds)")
    run.add_argument("--sampler", choices=SAMPLERS, help=f"Optuna multi-objective sampler (default by budget: {_by_budget('sampler')})")
    run.add_argument("--scheduler", choices=SCHEDULERS, help=f"early stopping of running trials (default by budget: {_by_budget('scheduler')})")
    run.add_argument("--grace-period", type=_positive_int, help="ASHA schedulers: epochs before the first rung (default: the budget's, else 1)")
    run.add_argument("--reduction-factor", type=_above_one, help="ASHA schedulers: about 1 in this many trials continues at each rung (default: the budget's, else 2)")
    run.add_argument("--warmup-trials", type=_non_negative_int, help="ASHA schedulers: trials run to the end before any is stopped at a rung (default: the budget's, else 0)")
    run.add_argument("--startup-trials", type=_positive_int, help="--sampler tpe: random trials before TPE models (default trials/3, 2..10)")
    run.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial from its last checkpoint")
    run.add_argument(
        "--promote", choices=PROMOTION_METHODS, default="knee", help="how the Pareto-best encoder(s) are chosen; front: every trial on the front"
    )
    run.add_argument("--promote-weights", type=_weights, help="weights for --promote weighted: ACC,MAE,SPARSITY")
    run.add_argument(
        "--promote-top", type=_positive_int, help="promote the K best encoders (default 1); K >= 3 also measures how the search scores rank them"
    )
    run.add_argument("--stages", type=_stages, help=f"comma-separated subset of {','.join(STAGES)} (default: all; on --resume: the run's)")
    run.add_argument("--resume", help="continue the run in this folder or URI; finished stages are not redone")
    run.add_argument("--seed", type=_non_negative_int, default=0, help="seeds the data subset, the sampler and every trial")
    run.add_argument(
        "--labelled-fraction",
        type=_labelled_fraction,
        default=1.0,
        metavar="F",
        help="semi-supervised: labels on a seeded, class-stratified fraction F of the train split only; the classifier, "
        "thresholds, Gaussians and LSDM see those, the decoders every training image",
    )
    run.add_argument("--dashboard-host", default="127.0.0.1", help="Ray dashboard bind address (default loopback only)")
    run.add_argument("--ray-temp-dir", help="temp/log folder of the local Ray instance (default Ray's /tmp/ray)")
    run.add_argument(
        "--no-estimate", dest="estimate", action="store_false", default=os.environ.get("REGENE_SEARCH_ESTIMATE", "1") != "0",
        help="skip the estimate of each stage's wall time (a few seconds of timed training steps; also REGENE_SEARCH_ESTIMATE=0)",
    )
    run.add_argument("--mlflow", metavar="URI", help="also log trials and stage metrics to this MLflow tracking URI (pip install 'regene-search[mlflow]')")
    after = run.add_argument_group("decoder, generate and evaluate stages")
    after.add_argument("--vgg-weights", help="torchvision VGG16 ImageNet weights for the perceptual loss (else the hub cache, else a neutral classifier)")
    after.add_argument("--decoder-width", type=_positive_int, help="decoder base width (default by image size)")
    after.add_argument("--generate-n", type=_counts, default=(2, 3, 5), help="latents per convex combination (default 2,3,5)")
    after.add_argument("--generate-per-class", type=_positive_int, default=64, help="combinations per class and n")
    after.add_argument("--generate-weights", choices=("uniform", "dirichlet"), default="uniform", help="1/n weights (paper) or Dirichlet")
    after.add_argument("--dirichlet-alpha", type=_positive_float, default=1.0)
    after.add_argument("--generators", type=_generators, default=GENERATORS, help=f"comma-separated generation strategies, any of {','.join(GENERATORS)}")
    after.add_argument("--generate-threshold", type=_probability, help="fixed filter threshold for both steps (default: mean confidences per class, below)")
    after.add_argument(
        "--image-threshold", choices=IMAGE_THRESHOLDS, default=IMAGE_THRESHOLDS[0],
        help="the filter's image step holds a generation of class c to the classifier's mean confidence on the decoder's reconstructions of "
             "holdout c images (default), or on the holdout images themselves (the paper's; a blurry decoder can then accept no image of a class)",
    )
    after.add_argument(
        "--min-image-confidence", type=_probability, metavar="P",
        help="stricter than the paper: also require the classifier's confidence on a generated image to reach P in every class "
             "(0.7 lifted the CIFAR-10 judge's accuracy on accepted images above 0.9; default: 0.7 on the cpu-hour budget, "
             "else none; 0 turns it off)",
    )
    after.add_argument("--neutral-depth", type=int, help="ResNet depth of the neutral classifier, 6k+2 (default by budget: 8/20/56)")
    after.add_argument("--inception-weights", help="torchvision Inception-v3 weights file: adds Inception FID")
    after.add_argument("--inception-images", type=_positive_int, default=2000, help="images per set for Inception FID")
    after.add_argument("--novelty-samples", type=_positive_int, default=256, help="generations checked against their nearest training image")

    pareto = commands.add_parser("pareto", help="print the Pareto front of a run")
    pareto.add_argument("run_dir")
    pareto.add_argument("--plot", help="write a figure of the front and the hypervolume history: PNG, SVG or PDF, by the file's suffix")
    pareto.add_argument("--json", action="store_true", help="print JSON for machines")

    show = commands.add_parser("show", help="a run in one screen: context, stages, the promoted encoder, quality against the paper's bar, warnings")
    show.add_argument("run_dir")
    show_as = show.add_mutually_exclusive_group()
    show_as.add_argument("--json", action="store_true", help="the same summary as JSON, for scripts")
    show_as.add_argument("--detail", action="store_true", help="every stage's full summary, the run's files and figures")

    report = commands.add_parser("report", help="write RUN/report.html: the whole run on one self-contained page (no server, no network)")
    report.add_argument("run_dir")
    report.add_argument("--out", help="write the page here instead of RUN/report.html")

    commands.add_parser("datasets", help="list the datasets with shape, classes and where they are looked for")
    return parser


def _existing_file(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise UserError(f"{flag}: no such file {path}")
    return str(Path(path).resolve())


def _results_root(text: str) -> str:
    """A local root is stored resolved; a URI as typed, since its query may carry filesystem options."""
    from .storage import Location

    root = Location.of(text)
    return str(root) if root.is_local else text


def _spec_from_args(args: argparse.Namespace) -> RunSpec:
    from .data import dataset_info
    from .data.names import DatasetRef
    from .search.space import default_space_path, load_space

    if args.dataset is None:
        raise UserError("run needs a DATASET (or --resume RUN_DIR)")
    dataset = DatasetRef.of(args.dataset)
    info = dataset_info(dataset)
    space = Path(args.space) if args.space else default_space_path(dataset)
    load_space(space).check_fits(info.image_size)
    if args.promote == "weighted" and args.promote_weights is None:
        raise UserError("--promote weighted needs --promote-weights ACC,MAE,SPARSITY")
    if args.promote == "knee" and args.promote_weights is not None:
        raise UserError("--promote-weights applies to --promote weighted; the knee of the front uses no weights")
    if args.promote == "front" and (args.promote_weights is not None or args.promote_top is not None):
        flag = "--promote-weights" if args.promote_weights is not None else "--promote-top"
        raise UserError(f"--promote front promotes every trial on the front: {flag} does not apply (use --promote knee|weighted with it)")
    if args.neutral_depth is not None and (args.neutral_depth < 8 or (args.neutral_depth - 2) % 6):
        raise UserError(f"--neutral-depth must be 6k+2 and >= 8 (8, 20, 32, 44, 56, ...), got {args.neutral_depth}")
    budget = BUDGETS[args.budget]
    sampler, scheduler = args.sampler or budget.sampler, args.scheduler or budget.scheduler
    rung_flags = {"--grace-period": args.grace_period, "--reduction-factor": args.reduction_factor, "--warmup-trials": args.warmup_trials}
    if scheduler == "fifo" and any(value is not None for value in rung_flags.values()):
        flag = next(flag for flag, value in rung_flags.items() if value is not None)
        raise UserError(f"{flag} applies to the ASHA schedulers; --scheduler fifo never stops a trial early (use --scheduler {'|'.join(s for s in SCHEDULERS if s != 'fifo')})")
    max_epochs = budget.max_epochs
    if args.grace_period is not None and args.grace_period > max_epochs:
        raise UserError(f"--grace-period {args.grace_period} is beyond the {args.budget} budget's {max_epochs} epochs per trial")
    if args.startup_trials is not None and sampler != "tpe":
        raise UserError(f"--startup-trials applies to --sampler tpe; {sampler} has no start-up phase")
    if args.max_failures < 0:
        raise UserError(f"--max-failures must be >= 0, got {args.max_failures}")
    return RunSpec(
        dataset=dataset,
        data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None,
        budget=args.budget,
        name=args.name or time.strftime("%Y%m%d-%H%M%S"),
        results_root=_results_root(args.results),
        space_path=str(space.resolve()),
        seed=args.seed,
        labelled_fraction=args.labelled_fraction,
        trials=args.trials,
        sampler=sampler,
        scheduler=scheduler,
        grace_period=args.grace_period or budget.grace_period,
        reduction_factor=args.reduction_factor or budget.reduction_factor,
        warmup_trials=args.warmup_trials if args.warmup_trials is not None else budget.warmup_trials,
        startup_trials=args.startup_trials,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_failures=args.max_failures,
        promote=args.promote,
        promote_weights=args.promote_weights,
        promote_top=args.promote_top or 1,
        stages=args.stages or STAGES,
        vgg_weights=_existing_file(args.vgg_weights, "--vgg-weights"),
        inception_weights=_existing_file(args.inception_weights, "--inception-weights"),
        inception_images=args.inception_images,
        neutral_depth=args.neutral_depth,
        decoder_width=args.decoder_width,
        generate_n=args.generate_n,
        generate_per_class=args.generate_per_class,
        generate_weights=args.generate_weights,
        dirichlet_alpha=args.dirichlet_alpha,
        generate_threshold=args.generate_threshold,
        image_threshold=args.image_threshold,
        min_image_confidence=_image_floor(args.min_image_confidence, budget),
        generators=args.generators,
        novelty_samples=args.novelty_samples,
        mlflow=args.mlflow,
    )


def _image_floor(given: float | None, budget: Budget) -> float | None:
    """`--min-image-confidence`, else the budget's floor; 0 is no floor (the paper's filter)."""
    floor = budget.min_image_confidence if given is None else given
    return floor or None


# What --resume may change: which stages run, where (the cluster) and where it is tracked; nothing about the run itself.
_RESUME_FLAGS = {"command", "resume", "stages", "address", "dashboard_host", "ray_temp_dir", "mlflow", "trials"}


def _flags_resume_ignores(args: argparse.Namespace) -> list[str]:
    """The options given with --resume that differ from their defaults and that the stored run overrides."""
    defaults = vars(build_parser().parse_args(["run"]))
    given = [name for name, value in vars(args).items() if name not in _RESUME_FLAGS and value != defaults.get(name)]
    return ["DATASET" if name == "dataset" else "--" + name.replace("_", "-") for name in given]


def _use_token_auth_for_clusters(address: str | None) -> None:
    """Clusters started with `ray start` use token auth, but a client sends its token only when
    RAY_AUTH_MODE=token is set before Ray is imported, so set it (unless the user chose)."""
    if address is not None:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def _run(args: argparse.Namespace, console: Console) -> int:
    _use_token_auth_for_clusters(args.address)
    from .trackers import require_mlflow
    from .cluster import is_loopback
    from .pipeline import run_pipeline
    from .results import RunPaths, read_run_record

    if args.resume:
        paths = RunPaths.existing(args.resume)
        try:
            spec = RunSpec.from_json(read_run_record(paths)["spec"])
        except (TypeError, ValueError, KeyError) as exc:
            raise UserError(f"{paths.run_json} holds no usable run spec: {exc}") from None
        if args.trials is not None and args.trials != spec.resolved_trials:
            raise UserError(
                f"--trials {args.trials}: the run in {paths.dir} was started with {spec.resolved_trials} trials, and a search "
                "cannot change its size on --resume; drop --trials, or start a new run"
            )
        if args.stages:
            spec = dataclasses.replace(spec, stages=args.stages)
        if args.mlflow:
            spec = dataclasses.replace(spec, mlflow=args.mlflow)
        ignored = _flags_resume_ignores(args)
        if ignored:
            console.print(f"--resume continues the run as its run.json says; ignored: {', '.join(ignored)}", markup=False, style="yellow", soft_wrap=True)
    else:
        spec = _spec_from_args(args)
        paths = RunPaths.plan(spec.results_root, spec.dataset, spec.name)
    if not is_loopback(args.dashboard_host):
        console.print(
            f"[bold red]WARNING: the Ray dashboard will listen on {args.dashboard_host}. Anyone who can reach it can "
            "submit jobs that run code on this machine; keep token auth on and firewall the port.[/bold red]"
        )
    require_mlflow(spec.mlflow)
    status = run_pipeline(
        spec, paths, address=args.address, dashboard_host=args.dashboard_host, console=console, ray_temp_dir=args.ray_temp_dir, estimate=args.estimate
    )
    finished = ", ".join(s for s in spec.stages if status.get(s, {}).get("status") == "done")
    console.print(f"done: {finished} -> {paths.dir}", markup=False)
    from . import report, summary

    console.rule("summary")
    report.print_summary(summary.run_summary(paths.dir), console)
    return 0


def _pareto(args: argparse.Namespace, console: Console) -> int:
    from . import plots, report

    if args.plot:
        plots.figure_format(args.plot)  # a bad suffix fails before the run is read
    front = report.load_front(args.run_dir)
    if args.json:
        print(report.front_json(front))
    else:
        report.print_front(front, console)
    if args.plot:
        plots.plot_front(front.pareto, front.hypervolume, Path(args.plot), title=front.run_dir.name)
        if not args.json:
            console.print(f"figure: {args.plot}", markup=False)
    return 0


def _show(args: argparse.Namespace, console: Console) -> int:
    from . import report, summary

    if args.detail:
        report.print_run(args.run_dir, console)
    elif args.json:
        print(summary.to_json(summary.run_summary(args.run_dir)))
    else:
        report.print_summary(summary.run_summary(args.run_dir), console)
    return 0


def _report(args: argparse.Namespace, console: Console) -> int:
    from . import html_report

    target = html_report.write_report(args.run_dir, args.out)
    console.print(f"report: {escape(str(target))}")
    return 0


def _datasets(args: argparse.Namespace, console: Console) -> int:
    from . import report

    report.print_datasets(console)
    return 0


COMMANDS = {"run": _run, "pareto": _pareto, "show": _show, "report": _report, "datasets": _datasets}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return COMMANDS[args.command](args, console)
    except UserError as exc:
        print(f"regene-search: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"regene-search: {signal.Signals(exc.signum).name} stopped stage {exc.stage}; continue with: regene-search run --resume {exc.run_dir}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("regene-search: interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
