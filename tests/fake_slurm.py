"""A stand-in for the SLURM commands snakemake-executor-plugin-slurm calls, for tests.

``python fake_slurm.py TOOL ARGS...`` behaves like TOOL (sbatch, srun, sacct,
squeue, scancel, sinfo, scontrol) as far as the plugin (2.x) and its jobstep
executor use them, reading the plugin's own calls:

- ``sbatch --parsable ... --wrap=CMD`` (or a script path / /dev/stdin) runs the job
  right away, in the foreground, in ``-D`` with its output in ``--output``
  (``%j`` replaced), then prints the job id. The job's state (COMPLETED or
  FAILED) is kept for sacct / squeue.
- ``srun [options] CMD...`` (inside a job) runs CMD.
- ``sacct ... --name RUN`` / ``squeue ... --name RUN`` print ``id|STATE`` lines.
- ``sinfo -o %P`` lists one default partition; ``scontrol show config`` a few
  settings; ``scancel`` marks jobs CANCELLED.

Every call is appended to ``$FAKE_SLURM_DIR/calls.jsonl`` (tool, argv and,
for sbatch, the parsed options), which is what a test checks the requested
resources against. Options the plugin does not use are rejected, so a plugin
change shows up as a test failure rather than being ignored.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "."))


@contextmanager
def locked():
    """Serialize access to the state files (the plugin submits from two threads)."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def record(tool: str, argv: list[str], **extra) -> None:
    with locked(), open(STATE / "calls.jsonl", "a") as f:
        f.write(json.dumps({"tool": tool, "argv": argv, **extra}) + "\n")


def jobs() -> dict:
    """Every job so far (the caller holds the lock)."""
    path = STATE / "jobs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_job(job_id: str, **fields) -> None:
    with locked():
        all_jobs = jobs()
        all_jobs.setdefault(job_id, {}).update(fields)
        (STATE / "jobs.json.tmp").write_text(json.dumps(all_jobs))
        os.replace(STATE / "jobs.json.tmp", STATE / "jobs.json")


def new_job_id() -> str:
    with locked():
        counter = STATE / "next_id"
        job_id = int(counter.read_text()) if counter.exists() else 1001
        counter.write_text(str(job_id + 1))
    return str(job_id)


def sbatch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sbatch", add_help=False, allow_abbrev=False)
    p.add_argument("--parsable", action="store_true")
    for opt in (
        "--job-name",
        "--output",
        "--export",
        "--comment",
        "--clusters",
        "--qos",
        "--reservation",
        "--exclude",
        "--gres",
        "--gpus",
        "--wrap",
    ):
        p.add_argument(opt)
    p.add_argument("-A", dest="account")
    p.add_argument("-p", dest="partition")
    p.add_argument("-t", dest="time")
    p.add_argument("-C", dest="constraint")
    p.add_argument("-D", dest="workdir")
    for opt in (
        "--mem",
        "--mem-per-cpu",
        "--nodes",
        "--ntasks",
        "--ntasks-per-gpu",
        "--cpus-per-task",
        "--cpus-per-gpu",
    ):
        p.add_argument(opt, type=int)
    p.add_argument("--requeue", action="store_true")
    p.add_argument("--no-requeue", action="store_true")
    p.add_argument("script", nargs="?")
    return p


def sbatch(argv: list[str]) -> int:
    opts = sbatch_parser().parse_args(argv)
    if (opts.wrap is None) == (opts.script is None):
        sys.exit("sbatch: error: give either --wrap or a batch script")
    job_id = new_job_id()
    record("sbatch", argv, options=vars(opts), job_id=job_id)
    command = ["/bin/sh", "-c", opts.wrap] if opts.wrap is not None else ["/bin/sh", "-s"]
    stdin = sys.stdin if opts.script == "/dev/stdin" else None
    if opts.script not in (None, "/dev/stdin"):
        command = ["/bin/sh", opts.script]
    env = dict(
        os.environ,
        SLURM_JOB_ID=job_id,
        SLURM_JOBID=job_id,
        SLURM_JOB_NAME=opts.job_name or "",
        SLURM_CPUS_PER_TASK=str(opts.cpus_per_task or 1),
    )
    if opts.gpus:
        env["SLURM_GPUS"] = str(opts.gpus)
    save_job(job_id, name=opts.job_name, state="RUNNING")
    log = Path((opts.output or "slurm-%j.out").replace("%j", job_id))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        rc = subprocess.run(
            command, cwd=opts.workdir, env=env, stdin=stdin, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    save_job(job_id, state="COMPLETED" if rc == 0 else "FAILED", exit_code=rc)
    print(job_id if opts.parsable else f"Submitted batch job {job_id}")
    return 0


def srun(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="srun", add_help=False, allow_abbrev=False)
    p.add_argument("-n", "--ntasks", type=int)
    p.add_argument("--cpu-bind")
    for opt in ("--cpus-per-task", "--cpus-per-gpu", "--gpus", "--nodes"):
        p.add_argument(opt, type=int)
    p.add_argument("command", nargs=argparse.REMAINDER)
    opts = p.parse_args(argv)
    record(
        "srun",
        argv,
        options={k: v for k, v in vars(opts).items() if k != "command"},
        job_id=os.environ.get("SLURM_JOB_ID"),
    )
    if not opts.command:
        sys.exit("srun: error: no command")
    os.execvp(opts.command[0], opts.command)


def status(tool: str, argv: list[str]) -> int:
    """sacct / squeue: ``id|STATE`` for the jobs named by --name; nothing otherwise
    (the plugin's account guess and failure-reason queries)."""
    record(tool, argv)
    if "--name" in argv:
        name = argv[argv.index("--name") + 1]
        with locked():
            known = jobs()
        for job_id, job in known.items():
            if job["name"] == name:
                print(f"{job_id}|{job['state']}")
    return 0


def scancel(argv: list[str]) -> int:
    record("scancel", argv)
    for job_id in (a for a in argv if a.isdigit()):
        save_job(job_id, state="CANCELLED")
    return 0


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    if tool == "sbatch":
        return sbatch(args)
    if tool == "srun":
        return srun(args)
    if tool in ("sacct", "squeue"):
        return status(tool, args)
    if tool == "scancel":
        return scancel(args)
    record(tool, args)
    if tool == "sinfo":
        print("PARTITION\ncpu*\ngpu")
    elif tool == "scontrol":
        print("MaxArraySize            = 1001\nMinJobAge               = 300 sec")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
