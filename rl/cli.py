"""`swarmrl`: train, sft, config.

  swarmrl train EXP.yaml [a.b=c ...]     train (SFT bootstrap first when sft.enabled)
  swarmrl train --resume RUN_DIR         continue a run from its latest checkpoint
  swarmrl sft EXP.yaml [a.b=c ...]       only the SFT bootstrap (cached)
  swarmrl config EXP.yaml [a.b=c ...]    validate and print the resolved config
  swarmrl config --explain [SECTION]     every key with type, default and meaning
  swarmrl sweep DIR_OR_GLOB [a.b=c ...]  run several experiments as one MLflow experiment
  swarmrl compare EXPERIMENT             table + PNG of an MLflow experiment's runs

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

    if args.command == "sft":
        cfg = load_config(args.experiment, args.overrides)
        from envs.registry import env_kwargs, make_env
        from rl.sft import run_sft

        env = make_env(cfg.env.name, **env_kwargs(cfg))
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
