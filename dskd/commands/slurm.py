"""`dskd slurm submit CONFIG [key=value ...] --nodes N --gpus-per-node G`: train on a SLURM cluster."""

from __future__ import annotations

import argparse

from dskd.commands import add_config_arguments

HELP = "Render and submit multi-node SLURM jobs."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser(
        "submit",
        help="render the sbatch template for `dskd train CONFIG` and sbatch it",
        description="Render an sbatch script (one srun task per device, SIGUSR1 checkpoint + requeue "
        "90 s before the time limit, logs in <run folder>/slurm/) and submit it. The job runs "
        "`dskd train CONFIG overrides... trainer.num_nodes=N trainer.devices=G trainer.resume=auto`.",
    )
    add_config_arguments(p)
    p.add_argument("--nodes", type=int, required=True, help="number of nodes N")
    p.add_argument("--gpus-per-node", type=int, required=True, help="GPUs per node G (0: CPU job)")
    p.add_argument("--tasks-per-node", type=int, help="processes per node of a CPU job (G=0; default 1)")
    p.add_argument("--cpus-per-task", type=int, help="CPU cores per process (default: data.num_workers + 1)")
    p.add_argument(
        "--mem",
        help="memory per node, e.g. 480G (default for GPU jobs: 0 = all of each node's memory; CPU jobs: "
        "the partition's default)",
    )
    p.add_argument(
        "--wandb-mode",
        choices=("online", "offline", "disabled"),
        help="WANDB_MODE of the job (default: disabled with logging.wandb=false, else this shell's "
        "WANDB_MODE, else online with a WANDB_API_KEY in the environment, else offline)",
    )
    p.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    p.add_argument("--time", help="time limit, e.g. 1-00:00:00 (default: the partition's)")
    p.add_argument("--job-name", help="SLURM job name (default: the experiment name)")
    p.add_argument("--template", help="sbatch template to fill (default: experiments/slurm/train.sbatch)")
    p.add_argument("--dry-run", action="store_true", help="print the script instead of submitting it")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from dskd.config.loading import load_config
    from dskd.launch.slurm import (
        TEMPLATE,
        JobSpec,
        check_mem,
        check_overrides,
        check_shape,
        default_cpus_per_task,
        render,
        submit,
        train_command,
        train_overrides,
        wandb_mode,
    )

    check_overrides(args.overrides)
    tasks = args.tasks_per_node if args.tasks_per_node is not None else (args.gpus_per_node or 1)
    check_shape(args.nodes, tasks, args.gpus_per_node, args.cpus_per_task)  # the flags before the config
    check_mem(args.mem)
    overrides = [*args.overrides, *train_overrides(args.nodes, tasks, args.gpus_per_node)]
    cfg = load_config(args.config, overrides)  # fail here, not in the queue, on a bad config
    from dskd.core.outputs import check_name, check_output, mark_output
    from dskd.training.run import run_dir

    workdir = Path.cwd()
    log_dir = (
        workdir / run_dir(cfg.runs_dir, cfg.name, cfg.seed) / "slurm"
    ).resolve()  # run_dir refuses an unsafe name
    spec = JobSpec(
        job_name=check_name(args.job_name, "--job-name") if args.job_name else cfg.name,
        nodes=args.nodes,
        tasks_per_node=tasks,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task or default_cpus_per_task(cfg.data.num_workers),
        mem=args.mem if args.mem is not None else ("0" if args.gpus_per_node else None),
        wandb_mode=args.wandb_mode or wandb_mode(cfg.logging.wandb, os.environ),
        partition=args.partition,
        time=args.time,
        workdir=workdir,
        log_dir=log_dir,
        command=train_command(Path(args.config).resolve(), overrides),
    )
    script = render(spec, Path(args.template) if args.template else TEMPLATE)
    if args.dry_run:
        print(script, end="")
        return 0
    run_folder = log_dir.parent  # the job's logs live in its run folder: refuse a foreign one, mark ours
    check_output(run_folder, "run")
    run_folder.mkdir(parents=True, exist_ok=True)
    mark_output(run_folder, "run")
    job_id = submit(script, spec)
    print(f"submitted job {job_id} ({spec.nodes} node(s) x {spec.tasks_per_node} task(s))")
    print(f"logs: {str(spec.log_pattern).replace('%j', job_id)}")
    return 0
