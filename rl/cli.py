"""`swarmrl`: train, sft, config.

  swarmrl train EXP.yaml [a.b=c ...]     train (SFT bootstrap first when sft.enabled)
  swarmrl train --resume RUN_DIR         continue a run from its latest checkpoint
  swarmrl sft EXP.yaml [a.b=c ...]       only the SFT bootstrap (cached)
  swarmrl config EXP.yaml [a.b=c ...]    validate and print the resolved config
  swarmrl config --explain [SECTION]     every key with type, default and meaning
  swarmrl sweep DIR_OR_GLOB [a.b=c ...]  run several experiments as one MLflow experiment
  swarmrl compare EXPERIMENT             table + PNG of an MLflow experiment's runs
  swarmrl eval RUN_DIR [EXP.yaml] [a.b=c ...] [--samples K] [--step N] [--json FILE]
                                         the trainer's held-out evaluation of a run's checkpoint
  swarmrl eval MODEL_DIR EXP.yaml [a.b=c ...] [--samples K] [--json FILE]
                                         the same for any Hugging Face model folder
  swarmrl export RUN_DIR OUT_DIR [--step N] [--average] [--force]
                                         a checkpoint as a Hugging Face folder (transformers, vLLM)

A bad experiment file exits with status 2 and one message before anything starts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rl.config import ConfigError, ExperimentConfig, load_config, to_yaml

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarmrl", description="Outcome-reward and parallel-agent RL for language models.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an experiment")
    t.add_argument("experiment", nargs="?", help="experiment YAML")
    t.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. train.steps=10")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    t.add_argument("--run-dir", help="run directory (default: <runs_dir>/<run.name>-<timestamp>)")
    s = sub.add_parser("sft", help="run only the SFT bootstrap")
    s.add_argument("experiment")
    s.add_argument("overrides", nargs="*")
    c = sub.add_parser("config", help="validate an experiment, or explain the schema")
    c.add_argument("experiment", nargs="?")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--explain", nargs="?", const="", default=None, metavar="SECTION", help="print every key (of SECTION)")
    w = sub.add_parser("sweep", help="run every experiment of a folder or glob as one MLflow experiment")
    w.add_argument("pattern", help="folder of YAMLs or a glob")
    w.add_argument("overrides", nargs="*")
    w.add_argument("--experiment", help="MLflow experiment name (default: the folder's name)")
    m = sub.add_parser("compare", help="compare the runs of an MLflow experiment")
    m.add_argument("experiment", help="MLflow experiment name")
    m.add_argument("--uri", help="MLflow tracking URI (default: sqlite:///<runs-dir>/mlflow.db)")
    m.add_argument("--runs-dir", default="runs", help="where the default MLflow store lives")
    m.add_argument("--out", help="PNG path (default: <runs-dir>/compare-<experiment>.png)")
    e = sub.add_parser("eval", help="held-out evaluation of a run's checkpoint or a model folder, as the trainer does it")
    e.add_argument("target", metavar="RUN_DIR|MODEL_DIR", help="a run directory, or a Hugging Face model folder")
    e.add_argument("experiment", nargs="?", help="experiment YAML (required for a model folder; replaces a run's config.yaml)")
    e.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the experiment")
    e.add_argument("--samples", type=int, metavar="K", help="samples per held-out task (default: train.eval_samples)")
    e.add_argument("--step", type=int, metavar="N", help="the run's checkpoint of step N (default: the latest)")
    e.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    x = sub.add_parser("export", help="write a run's checkpoint as a Hugging Face model folder")
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("out_dir", metavar="OUT_DIR")
    x.add_argument("--step", type=int, metavar="N", help="the checkpoint of step N (default: the latest)")
    x.add_argument("--average", action="store_true", help="the evaluated weight average (ema.pt, train.eval_ema) instead of the trained weights")
    x.add_argument("--force", action="store_true", help="replace an earlier export in OUT_DIR")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # overrides may follow options (`--run-dir D a.b=c`): argparse leaves those unparsed
    args, extra = parser.parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") or "=" not in x]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *extra]
    try:
        return _dispatch(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_CONFIG


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "config":
        if args.explain is not None:
            from rl.explain import explain

            try:
                print(explain(args.explain or None))
            except KeyError:
                raise ConfigError(f"no section {args.explain!r}; sections: {', '.join(ExperimentConfig.model_fields)}") from None
            return 0
        if not args.experiment:
            raise ConfigError("give an experiment YAML to validate, or --explain")
        print(to_yaml(load_config(args.experiment, args.overrides)), end="")
        return 0

    if args.command == "sweep":
        from rl.sweep import plan_sweep, run_sweep
        from rl.trainer import train

        planned = plan_sweep(args.pattern, args.overrides, args.experiment)  # validates every file first
        for r in run_sweep(planned, train):
            print(f"{Path(r['file']).name}: " + " ".join(f"{k}={v:.4g}" for k, v in r.items() if isinstance(v, float)))
        print(f"compare with: swarmrl compare {planned[0][1].tracking.experiment}")
        return 0

    if args.command == "compare":
        from rl.compare import compare, format_table
        from rl.tracking import default_uri

        out = Path(args.out) if args.out else Path(args.runs_dir) / f"compare-{args.experiment}.png"
        try:
            rows, png = compare(args.uri or default_uri(args.runs_dir), args.experiment, out)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        print(format_table(rows))
        print(f"curves: {png}")
        return 0

    if args.command == "export":
        from rl.export import export

        out = export(args.run_dir, args.out_dir, args.step, args.average, force=args.force)
        print(f"exported to {out}")
        print(f"load with: AutoModelForCausalLM.from_pretrained({str(out)!r}), or serve with: vllm serve {out}")
        return 0

    if args.command == "eval":
        from rl.eval_command import format_report, run_eval_command, write_json

        experiment, overrides = args.experiment, args.overrides
        if experiment is not None and "=" in experiment and not Path(experiment).is_file():
            experiment, overrides = None, [experiment, *overrides]  # `swarmrl eval RUN_DIR a.b=c`
        report = run_eval_command(args.target, experiment, overrides, samples=args.samples, step=args.step)
        print(format_report(report))
        if args.json:
            print(f"report: {write_json(report, args.json)}")
        return 0

    if args.command == "sft":
        cfg = load_config(args.experiment, args.overrides)
        from rl.experiment_env import experiment_env
        from rl.sft import run_sft

        env = experiment_env(cfg)
        print(run_sft(cfg, env))
        return 0

    # train
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_dir}: not a run directory (no config.yaml)")
        cfg = load_config(run_dir / "config.yaml", args.overrides if not args.experiment else [args.experiment, *args.overrides])
        resume = True
    else:
        if not args.experiment:
            raise ConfigError("give an experiment YAML (or --resume RUN_DIR)")
        cfg = load_config(args.experiment, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else Path(cfg.run.runs_dir) / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        resume = False
    from rl.trainer import train

    summary = train(cfg, run_dir, resume=resume)
    print(f"run directory: {run_dir}")
    print("final: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
